"""Stage 2's prefill worker: the automatic stage's worker with detector boxes as SAM's prompts.

With a verifier (verifier.checkpoint), each prefilled mask is routed by its score (verifier.routes.route):
accepted and review masks are written with their route in `extra`, rejected ones are dropped and counted.
"""

from __future__ import annotations

import json
from collections import Counter

from data_engine.amg.worker import AutoWorker
from data_engine.io.dataset import mask_row
from data_engine.verifier.routes import REJECTED, route, route_of

PREFILL_KEYS = ("box_score_thresh", "box_nms_thresh", "max_boxes", "min_box_iou", "points_fill", "fill_overlap")


class SemiWorker(AutoWorker):
    """The automatic stage's worker with detector boxes as SAM's prompts."""

    batches_images = False  # each image is prompted with its own boxes

    def __init__(self, cfg: dict, root: str):
        from data_engine.detector.model import load_detector
        from data_engine.semi.prefill import Prefiller

        super().__init__(cfg, root)
        detector = load_detector(cfg["detector"]["checkpoint"], cfg["detector"].get("device") or self.generator.device)
        self.prefiller = Prefiller(detector, self.generator, **{k: cfg["semi"][k] for k in PREFILL_KEYS})
        self.rejected: dict[str, int] = {}  # file name -> masks the verifier rejected (the shard's counts)

    def image_masks(self, image, row: dict) -> list[dict]:
        """Prefilled masks of one image as rows of stage "semi" (source prefill or points_fill)."""
        return [
            mask_row(
                row,
                m.pop("segmentation"),
                stage="semi",
                source=m.pop("source"),
                model=self.model_name,
                extra=m.pop("extra"),
                **m,
            )
            for m in self.prefiller(image)
        ]

    def verified(self, image, masks: list[dict]) -> list[dict]:
        """With a verifier: the accepted and review masks, each with its route in `extra`."""
        masks = super().verified(image, masks)
        if not self.verifier or not masks:
            return masks
        v, kept = self.cfg["verifier"], []
        for m in masks:
            where = route(m["verifier_score"], v["accept"], v["reject"])
            if where != REJECTED:
                m["extra"] = json.dumps({**json.loads(m["extra"] or "{}"), "route": where}, sort_keys=True)
                kept.append(m)
        self.rejected[masks[0]["file_name"]] = len(masks) - len(kept)
        return kept

    def shard_counts(self, results: list[tuple[dict, list[dict]]]) -> dict:
        """Masks by source (and by route, with a verifier) and ok images without a mask, for the summary."""
        sources = Counter(m["source"] for _, masks in results for m in masks)
        empty = sum(row["status"] == "ok" and not masks for row, masks in results)
        counts = {"masks_by_source": dict(sources), "images_without_masks": empty}
        if self.verifier:
            routes = Counter(route_of(m) for _, masks in results for m in masks)
            routes[REJECTED] = sum(self.rejected.pop(row["file_name"], 0) for row, _ in results)
            counts["masks_by_route"] = dict(routes)
        return counts
