"""Class-agnostic box AP and AR of a detector on held-out examples, with pycocotools' COCOeval."""

from __future__ import annotations

import numpy as np

from data_engine.detector.model import detect
from data_engine.io import coco

MAX_DETS = (1, 10, 100, 300)
AP_MAX_DETS = 100  # COCO's convention for AP


def box_metrics(model, examples: list[dict], score_thresh: float = 0.0) -> dict:
    """{'ap' (AP@[.5:.95]), 'ap50', 'ap75' at 100 detections; 'ar1', 'ar10', 'ar100', 'ar300'; counts}
    over every object size, one class; None for every figure when there is no held-out box."""
    counts = {"images": len(examples), "boxes": int(sum(len(ex["boxes"]) for ex in examples))}
    if not counts["boxes"]:
        return {"ap": None, "ap50": None, "ap75": None, **{f"ar{k}": None for k in MAX_DETS}, **counts}
    gt = ground_truth(examples)
    dets = detections(model, examples, score_thresh)
    counts["detections"] = len(dets)
    return {**summarize(coco.evaluate(gt, dets, "bbox", MAX_DETS)), **counts}


def ground_truth(examples: list[dict]) -> dict:
    """A COCO document of the examples' boxes: image ids are positions, one category."""
    images, annotations = [], []
    for i, ex in enumerate(examples):
        h, w = ex["image"].shape[-2:]
        images.append({"id": i, "height": int(h), "width": int(w)})
        for box, area in zip(ex["boxes"], ex["areas"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}


def detections(model, examples: list[dict], score_thresh: float) -> list[dict]:
    """The model's boxes on every example, as COCO results (XYWH)."""
    results = []
    for i, ex in enumerate(examples):
        boxes, scores = detect(model, ex["image"].permute(1, 2, 0).numpy(), score_thresh)
        for (x0, y0, x1, y1), score in zip(boxes.tolist(), scores.tolist()):
            results.append({"image_id": i, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    return results


def summarize(ev) -> dict:
    """AP and AR read from ev.eval (summarize() hard-codes maxDets positions), area range 'all'."""
    p = ev.params
    area, at = p.areaRngLbl.index("all"), MAX_DETS.index(AP_MAX_DETS)
    precision = ev.eval["precision"][:, :, :, area, at]  # [T, R, K]
    recall = ev.eval["recall"][:, :, area, :]  # [T, K, M]

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return round(float(valid.mean()), 4) if valid.size else 0.0

    out = {
        "ap": mean(precision),
        "ap50": mean(precision[np.isclose(p.iouThrs, 0.5)]),
        "ap75": mean(precision[np.isclose(p.iouThrs, 0.75)]),
    }
    out.update({f"ar{k}": mean(recall[:, :, m]) for m, k in enumerate(MAX_DETS)})
    return out
