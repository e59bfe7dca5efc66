"""One image's prefilled masks: detector boxes -> box NMS -> SAM box prompts -> the automatic filters.

The masks come from `MaskGenerator.generate_from_boxes`, so they pass the same predicted-IoU,
stability, area, NMS and small-region filters as the automatic stage's (the `amg` settings). With
`min_box_iou` a mask must also fill its box: the IoU of the mask's bounding box with the detector
box must reach it (a mask that leaks out of its box or covers a sliver of it is not prefilled). With
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
        min_box_iou: float = 0.0,
        points_fill: bool = False,
        fill_overlap: float = 0.5,
    ) -> None:
        """
        detector: a box detector of this project (data_engine.detector.model.load_detector).
        generator: SAM with the automatic stage's filters (its `amg` settings).
        box_score_thresh: detector boxes scoring below this are not prompted.
        box_nms_thresh: box IoU above which a lower-scoring detector box is dropped before prompting.
        max_boxes: at most this many boxes per image are prompted, best first.
        min_box_iou: masks whose bounding box has a lower IoU with their detector box are dropped (0: off).
        points_fill: also run the automatic point grid and keep its masks outside the prefilled ones.
        fill_overlap: points_fill drops a grid mask with at least this fraction of its area prefilled.
        """
        self.detector, self.generator = detector, generator
        self.box_score_thresh, self.box_nms_thresh, self.max_boxes = box_score_thresh, box_nms_thresh, max_boxes
        self.min_box_iou = min_box_iou
        self.points_fill, self.fill_overlap = points_fill, fill_overlap

    def __call__(self, image: np.ndarray) -> list[dict]:
        """[H, W, 3] uint8 RGB -> one dict per kept mask: the generator's FIELDS, `source` and `extra`."""
        # Boxes from the detector, prompted one mask each
        boxes, scores = self.detect(image)
        got = self.generator.generate_from_boxes(image, boxes)
        fits = box_iou_xywh(got["bbox"], boxes[got["box_index"]]) if len(got["bbox"]) else []
        masks = [
            entry(got, i, PREFILL, {"detector_box": boxes[b].tolist(), "detector_score": float(scores[b])})
            for i, b in enumerate(got["box_index"])
            # with the filters off SAM can return an empty mask: nothing to prefill
            if got["area"][i] > 0 and fits[i] >= self.min_box_iou
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


def box_iou_xywh(mask_boxes: list, boxes: np.ndarray) -> np.ndarray:
    """[N] IoU of each mask's bounding box (XYWH, COCO's w = x_max - x_min + 1) with its box ([N, 4] XYXY)."""
    m = np.asarray(mask_boxes, dtype=np.float64).reshape(-1, 4)
    m = np.concatenate([m[:, :2], m[:, :2] + m[:, 2:]], axis=1)  # XYXY, the pixel-edge convention of boxes
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inter = np.prod(np.clip(np.minimum(m[:, 2:], b[:, 2:]) - np.maximum(m[:, :2], b[:, :2]), 0, None), axis=1)
    union = np.prod(m[:, 2:] - m[:, :2], axis=1) + np.prod(b[:, 2:] - b[:, :2], axis=1) - inter
    return inter / np.maximum(union, 1e-9)


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
