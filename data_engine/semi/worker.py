"""Stage 2's prefill worker: the automatic stage's worker with detector boxes as SAM's prompts."""

from __future__ import annotations

from collections import Counter

from data_engine.amg.worker import AutoWorker
from data_engine.io.dataset import mask_row

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

    def shard_counts(self, results: list[tuple[dict, list[dict]]]) -> dict:
        """Masks by source and ok images without a mask, for the stage's summary."""
        sources = Counter(m["source"] for _, masks in results for m in masks)
        empty = sum(row["status"] == "ok" and not masks for row, masks in results)
        return {"masks_by_source": dict(sources), "images_without_masks": empty}
