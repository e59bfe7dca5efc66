"""Audit figures from per-mask rows: pair quality, recall, precision, by size, AR with COCOeval, worst images.

A row is one expert mask (matched or not) or one unmatched generated mask:
{file_name, pred_index, expert_index, iou, boundary_iou, pred_area, expert_area, size, stage, source}
with None for the side that is absent.
"""

from __future__ import annotations

import numpy as np

from data_engine.io import coco

PAIR_THRESHOLDS = (0.90, 0.75)  # SA-1B's audit: share of pairs with IoU above these
RECALL_THRESHOLDS = (0.5, 0.75, 0.9)  # expert masks matched at IoU >= t
AR_MAX_DETS = (10, 100, 1000)
SIZES = ("small", "medium", "large")
# COCOeval's default areaRng, in its order (bounds inclusive: an area of exactly 32^2 counts in both)
COCO_AREAS = {"all": (0, 1e10), "small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e10)}


def size_class(area: int) -> str:
    """COCO object size: small < 32^2 <= medium <= 96^2 < large."""
    if area < 32**2:
        return "small"
    return "medium" if area <= 96**2 else "large"


def summarize(rows: list[dict]) -> dict:
    """Counts, pair IoU figures, boundary IoU, recall and precision of one set of rows."""
    n_expert = sum(r["expert_index"] is not None for r in rows)
    n_pred = sum(r["pred_index"] is not None for r in rows)
    pairs = [r for r in rows if r["expert_index"] is not None and r["pred_index"] is not None]
    iou = np.array([r["iou"] for r in pairs], dtype=np.float64)
    biou = np.array([r["boundary_iou"] for r in pairs if r["boundary_iou"] is not None], dtype=np.float64)
    return pair_summary(iou, biou, n_expert, n_pred)


def pair_summary(iou: np.ndarray, biou: np.ndarray, n_expert: int, n_pred: int) -> dict:
    """summarize() from the matched pairs' IoU [K] and boundary IoU and the masks on each side."""
    out = {
        "expert_masks": n_expert,
        "pred_masks": n_pred,
        "matched_pairs": len(iou),
        "expert_unmatched": n_expert - len(iou),
        "pred_unmatched": n_pred - len(iou),
    }
    # Quality of the matched pairs (SA-1B's figures)
    for t in PAIR_THRESHOLDS:
        out[f"frac_iou_above_{t:.2f}"] = share(iou > t, len(iou))
    out["mean_iou"] = mean(iou)
    out["median_iou"] = float(np.median(iou)) if len(iou) else None
    out["mean_boundary_iou"] = mean(biou)
    # Coverage of the expert masks, and share of generated masks that found one
    for t in RECALL_THRESHOLDS:
        out[f"recall@{t:g}"] = share(iou >= t, n_expert)
        out[f"precision@{t:g}"] = share(iou >= t, n_pred)
    return out


def by_size(rows: list[dict]) -> dict:
    """summarize() per size class: matched pairs and unmatched expert masks by the expert's area,
    unmatched generated masks by their own."""
    return {name: summarize([r for r in rows if r["size"] == name]) for name in SIZES}


def share(hits: np.ndarray, total: int):
    return float(np.sum(hits) / total) if total else None


def mean(values: np.ndarray):
    return float(values.mean()) if len(values) else None


def recall_curve(rows: list[dict], thresholds: np.ndarray) -> np.ndarray:
    """Share of expert masks matched with IoU >= t, for each t."""
    n_expert = sum(r["expert_index"] is not None for r in rows)
    iou = np.array([r["iou"] for r in rows if r["expert_index"] is not None and r["pred_index"] is not None])
    if not n_expert:
        return np.full(len(thresholds), np.nan)
    return np.array([(iou >= t).sum() / n_expert for t in thresholds])


def per_image(rows: list[dict]) -> list[dict]:
    """One summary per image; `expert_mean_iou` averages over expert masks with 0 for a missed one."""
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["file_name"], []).append(r)
    out = []
    for name, group in sorted(by_file.items()):
        s = summarize(group)
        matched_iou = sum(r["iou"] for r in group if r["expert_index"] is not None and r["pred_index"] is not None)
        s["expert_mean_iou"] = matched_iou / s["expert_masks"] if s["expert_masks"] else None
        out.append({"file_name": name, **s})
    return out


def worst_images(images: list[dict], k: int) -> list[dict]:
    """The k images with the lowest expert_mean_iou (images without expert masks are not ranked)."""
    ranked = [i for i in images if i["expert_mean_iou"] is not None]
    return sorted(ranked, key=lambda i: (i["expert_mean_iou"], i["file_name"]))[:k]


def coco_ar(images: list[dict], max_dets=AR_MAX_DETS) -> dict:
    """Class-agnostic mask AR@k with pycocotools' COCOeval (useCats=0): {area: {"ar@k": value}} for
    area in all, small, medium, large.

    `images`: [{height, width, expert: [{counts, area}], pred: [{counts, score}]}]. AR@k is the mean
    over IoU thresholds 0.50:0.95 of eval['recall'] at maxDets k; None where no expert mask counts.
    """
    gt_doc, dets = coco_documents(images)
    evaluator = coco.evaluate(gt_doc, dets, "segm", max_dets)
    return read_ar(evaluator.eval["recall"], max_dets)


def coco_documents(images: list[dict]) -> tuple[dict, list[dict]]:
    """Ground truth as a COCO dict (one 'object' category) and the generated masks as results."""
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    dets = []
    for image_id, img in enumerate(images, start=1):
        h, w = img["height"], img["width"]
        gt["images"].append({"id": image_id, "height": h, "width": w})
        for m in img["expert"]:
            ann_id = len(gt["annotations"]) + 1
            gt["annotations"].append(coco.annotation(ann_id, image_id, m["counts"], h, w, area=m["area"]))
        for m in img["pred"]:
            score = 1.0 if m["score"] is None else m["score"]
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": coco.segmentation(m["counts"], h, w),
                    "score": score,
                }
            )
    return gt, dets


def read_ar(recall: np.ndarray, max_dets) -> dict:
    """recall is [T, K, A, M] (IoU thresholds, categories, area ranges, maxDets); -1 means no ground truth."""
    out = {area: {} for area in COCO_AREAS}
    for a, area in enumerate(COCO_AREAS):
        for m, k in enumerate(max_dets):
            values = recall[:, :, a, m]
            values = values[values > -1]
            out[area][f"ar@{k}"] = float(values.mean()) if values.size else None
    return out
