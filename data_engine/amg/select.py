"""The automatic stage's steps after the model, on masks already made: the predicted-IoU and stability
thresholds, box NMS within each crop, NMS across crops, small-region clean-up, and mask-IoU NMS.

The generator runs them on the masks of each image it makes; the sweep stage runs them on a pilot run's
stored candidates (amg/candidates.py). Both call these functions in the same order, so a sweep at the
pilot's own settings gives the pilot's masks exactly.

A batch of masks is a dict of columns: "rles" (COCO compressed RLE counts, a list), "boxes" [N, 4] XYXY
(max inclusive, integers), "iou_preds" [N], "stability" [N], "points" [N, ...] and, once in image px,
"crop_boxes" [N, 4] XYXY.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from segment_anything.utils.amg import uncrop_boxes_xyxy, uncrop_points
from torchvision.ops.boxes import batched_nms, box_area

from data_engine.amg.postprocess import clean_small_regions_rle
from data_engine.io import rle


@dataclass(frozen=True)
class Selection:
    """The settings of these steps (the generator's keyword arguments of the same names)."""

    pred_iou_thresh: float = 0.88
    strict_iou_thresh: bool = False
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    crop_nms_thresh: float = 0.7
    min_mask_region_area: int = 100
    keep_largest_small_region: bool = False
    mask_nms_thresh: float | None = None

    @classmethod
    def of(cls, settings: dict) -> Selection:
        """The selection settings found in an amg settings dict (the others left at their defaults)."""
        return cls(**{f.name: settings[f.name] for f in fields(cls) if f.name in settings})


def select_crop(data: dict, selection: Selection) -> dict:
    """One crop's masks (boxes in crop px) -> those passing the thresholds, de-duplicated by box NMS
    ranked by predicted IoU."""
    if not len(data["rles"]):
        return data
    data = thresholds(data, selection)
    return nms(data, data["iou_preds"], selection.box_nms_thresh) if len(data["rles"]) else data


def select_image(parts: list[dict], n_crops: int, height: int, width: int, selection: Selection) -> dict:
    """The select_crop masks of each crop of one image (in image px, with crop_boxes) -> the image's
    masks: NMS across crops (the most zoomed-in crop wins), small-region clean-up, mask-IoU NMS."""
    data = concat(parts)
    if n_crops > 1 and len(data["rles"]):
        data = nms(data, 1 / box_area(data["crop_boxes"].float()), selection.crop_nms_thresh)
    if selection.min_mask_region_area > 0 and len(data["rles"]):
        data = clean_small_regions(data, height, width, selection)
    if selection.mask_nms_thresh is not None and len(data["rles"]):
        data = mask_nms(data, height, width, selection.mask_nms_thresh)
    return data


def thresholds(data: dict, selection: Selection) -> dict:
    """Masks whose predicted IoU and stability pass their thresholds (0 turns a filter off, as in SAM)."""
    keep = torch.ones(len(data["rles"]), dtype=torch.bool, device=data["iou_preds"].device)
    if selection.pred_iou_thresh > 0:
        iou = data["iou_preds"]
        keep &= iou > selection.pred_iou_thresh if selection.strict_iou_thresh else iou >= selection.pred_iou_thresh
    if selection.stability_score_thresh > 0:
        keep &= data["stability"] >= selection.stability_score_thresh
    return data if bool(keep.all()) else take(data, torch.nonzero(keep)[:, 0])


def uncrop(data: dict, crop_box: list[int]) -> dict:
    """One crop's masks with boxes and points moved from crop px to image px, and their crop box."""
    if not len(data["rles"]):
        return data
    n = len(data["rles"])
    return {
        **data,
        "boxes": uncrop_boxes_xyxy(data["boxes"], crop_box),
        "points": uncrop_points(data["points"], crop_box),
        "crop_boxes": torch.tensor([crop_box] * n, device=data["boxes"].device),
    }


def clean_small_regions(data: dict, height: int, width: int, selection: Selection) -> dict:
    """Fill small holes, remove small islands, then box NMS again preferring untouched masks. Each mask is
    cleaned inside its box (clean_small_regions_rle); an untouched mask keeps its RLE."""
    device = data["boxes"].device
    counts, boxes, scores, kept = [], [], [], []
    for i, old in enumerate(data["rles"]):
        new, changed, box = clean_small_regions_rle(
            old, height, width, selection.min_mask_region_area, selection.keep_largest_small_region
        )
        if new is not None:
            counts.append(new)
            boxes.append(box)
            scores.append(0.0 if changed else 1.0)
            kept.append(i)
    if not kept:
        return take(data, torch.zeros(0, dtype=torch.long))
    data = take(data, torch.as_tensor(kept))
    data["rles"] = counts
    data["boxes"] = torch.as_tensor(np.array(boxes), device=device)
    scores = torch.as_tensor(scores, device=device)
    keep = batched_nms(data["boxes"].float(), scores, torch.zeros_like(scores), selection.box_nms_thresh)
    return take(data, keep)


def mask_nms(data: dict, height: int, width: int, thresh: float) -> dict:
    """Greedy NMS on mask IoU ranked by predicted IoU: a mask overlapping a better-ranked kept mask at IoU
    >= thresh is dropped (near-duplicates that box NMS misses because their boxes differ). Kept masks stay
    in their order."""
    order = torch.argsort(data["iou_preds"].cpu(), descending=True, stable=True).tolist()
    iou = rle.iou_matrix(data["rles"], data["rles"], height, width)
    kept: list[int] = []
    for i in order:
        if not kept or iou[i, kept].max() < thresh:
            kept.append(i)
    return take(data, torch.as_tensor(sorted(kept), dtype=torch.long))


def near_duplicates(counts: list[str], height: int, width: int, thresh: float = 0.9) -> int:
    """How many of one image's masks overlap another of them at mask IoU >= thresh."""
    if len(counts) < 2:
        return 0
    iou = rle.iou_matrix(counts, counts, height, width)
    np.fill_diagonal(iou, 0.0)
    return int((iou >= thresh).any(1).sum())


def concat(parts: list[dict]) -> dict:
    """Concatenate columnar batches (tensors and lists) key by key."""
    parts = [p for p in parts if p and len(p["rles"])] or parts[:1]
    if not parts:
        return {"rles": []}
    return {
        k: sum((p[k] for p in parts), []) if isinstance(parts[0][k], list) else torch.cat([p[k] for p in parts])
        for k in parts[0]
    }


def nms(data: dict, scores: torch.Tensor, thresh: float) -> dict:
    """Rows kept by greedy box NMS at IoU `thresh`, ranked by `scores`."""
    return take(data, batched_nms(data["boxes"].float(), scores, torch.zeros_like(scores), thresh))


def take(data: dict, idx: torch.Tensor) -> dict:
    """Rows `idx` of every column."""
    rows = idx.tolist()
    return {k: [v[i] for i in rows] if isinstance(v, list) else v[idx.to(v.device)] for k, v in data.items()}
