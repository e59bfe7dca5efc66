"""One image's prefilled masks: detector boxes -> box NMS -> SAM box prompts -> the automatic filters.

The masks come from `MaskGenerator.generate_from_boxes`, so they pass the same predicted-IoU,
stability, area, NMS and small-region filters as the automatic stage's (the `amg` settings). With
`points_fill` the automatic stage's point grid also runs on the image; a grid mask with at least
`fill_overlap` of its area under the prefilled masks is dropped (that object is already prefilled),
the others are kept with source "points_fill".
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms

from data_engine.amg.generator import FIELDS, MaskGenerator
from data_engine.detector.model import detect
from data_engine.io import rle

PREFILL, POINTS_FILL = "prefill", "points_fill"


class Prefiller:
    def __init__(
        self,
        detector: torch.nn.Module,
        generator: MaskGenerator,
        box_score_thresh: float = 0.5,
        box_nms_thresh: float = 0.5,
        max_boxes: int = 300,
        points_fill: bool = False,
        fill_overlap: float = 0.5,
    ) -> None:
        """
        detector: a box detector of this project (data_engine.detector.model.load_detector).
        generator: SAM with the automatic stage's filters (its `amg` settings).
        box_score_thresh: detector boxes scoring below this are not prompted.
        box_nms_thresh: box IoU above which a lower-scoring detector box is dropped before prompting.
        max_boxes: at most this many boxes per image are prompted, best first.
        points_fill: also run the automatic point grid and keep its masks outside the prefilled ones.
        fill_overlap: points_fill drops a grid mask with at least this fraction of its area prefilled.
        """
        self.detector, self.generator = detector, generator
        self.box_score_thresh, self.box_nms_thresh, self.max_boxes = box_score_thresh, box_nms_thresh, max_boxes
        self.points_fill, self.fill_overlap = points_fill, fill_overlap

    def __call__(self, image: np.ndarray) -> list[dict]:
        """[H, W, 3] uint8 RGB -> one dict per kept mask: the generator's FIELDS, `source` and `extra`."""
        # Boxes from the detector, prompted one mask each
        boxes, scores = self.detect(image)
        got = self.generator.generate_from_boxes(image, boxes)
        masks = [
            entry(got, i, PREFILL, {"detector_box": boxes[b].tolist(), "detector_score": float(scores[b])})
            for i, b in enumerate(got["box_index"])
            if got["area"][i] > 0  # with the filters off SAM can return an empty mask: nothing to prefill
        ]
        # Optionally the automatic grid on what the prefilled masks leave
        if self.points_fill:
            masks += self.fill(image, [m["segmentation"] for m in masks])
        return masks

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([N, 4] XYXY pixel boxes, [N] scores): detections >= box_score_thresh after box NMS, best first."""
        boxes, scores = detect(self.detector, image, self.box_score_thresh)
        if len(boxes) == 0:
            return boxes, scores
        keep = nms(torch.as_tensor(boxes), torch.as_tensor(scores), self.box_nms_thresh).numpy()
        keep = keep[: self.max_boxes]
        return boxes[keep], scores[keep]

    def fill(self, image: np.ndarray, prefilled: list[str]) -> list[dict]:
        """The automatic stage's masks that lie mostly outside the prefilled ones."""
        got = self.generator.generate(image)
        covered = covered_fraction(got["segmentation"], prefilled, *image.shape[:2])
        keep = [i for i in range(len(covered)) if covered[i] < self.fill_overlap and got["area"][i] > 0]
        return [entry(got, i, POINTS_FILL, None) for i in keep]


def entry(columns: dict, i: int, source: str, extra: dict | None) -> dict:
    """Row `i` of generator columns as one mask dict."""
    return {**{k: columns[k][i] for k in FIELDS}, "source": source, "extra": extra}


def covered_fraction(counts: list[str], covering: list[str], height: int, width: int) -> np.ndarray:
    """[N]: the fraction of each mask's area that lies under the union of the `covering` masks."""
    union = np.zeros((height, width), dtype=bool)
    for c in covering:
        union |= rle.decode(c, height, width)
    fractions = []
    for c in counts:
        mask = rle.decode(c, height, width)
        fractions.append((mask & union).sum() / max(int(mask.sum()), 1))
    return np.asarray(fractions, dtype=np.float64)
