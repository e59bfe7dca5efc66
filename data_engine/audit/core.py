"""The audit in order: pair the images of both sides, match masks per image, score the pairs, aggregate."""

from __future__ import annotations

import logging

from data_engine.audit import metrics
from data_engine.audit.boundary import band_width, boundary_iou
from data_engine.audit.load import AuditError
from data_engine.io import rle
from data_engine.io.match import exact_pairs

log = logging.getLogger(__name__)


def audit(pred: dict, expert: dict, min_iou: float = 0.0, boundary_ratio: float = 0.02, worst_k: int = 8) -> dict:
    """Metrics (overall, by size, by stage, by source, worst images), the per-mask rows and the images."""
    keys, coverage = pair_images(pred, expert)
    images = [evaluate_image(key, pred, expert, min_iou) for key in keys]
    rows = [r for img in images for r in mask_rows(img, img["pairs"], range(len(img["pred"])), boundary_ratio)]
    per_image = metrics.per_image(rows)
    ar = metrics.coco_ar(images)
    by_stage, stage_rows = pred_groups(images, "stage", min_iou, boundary_ratio)
    by_source, _ = pred_groups(images, "source", min_iou, boundary_ratio)
    result = {
        **coverage,
        **metrics.summarize(rows),
        **ar["all"],
        "by_size": size_groups(rows, ar),
        "by_stage": by_stage,
        "by_source": by_source,
        "worst_images": metrics.worst_images(per_image, worst_k),
    }
    return {"metrics": result, "rows": rows, "stage_rows": stage_rows, "images": images, "per_image": per_image}


def pair_images(pred: dict, expert: dict) -> tuple[list, dict]:
    """Images present on both sides (sizes checked), and how many were not."""
    common = sorted(set(pred["images"]) & set(expert["images"]), key=str)
    if not common:
        raise AuditError(
            f"no image is on both sides: pred {pred['path']} has e.g. {sample(pred['images'])}, expert "
            f"{expert['path']} has e.g. {sample(expert['images'])}. Give the same file names relative to the "
            "image folder, or match on ids with audit.match_by=image_id"
        )
    for key in common:
        check_size(key, pred["images"][key], expert["images"][key])
    failed = sorted(set(pred["failed"]) & set(expert["images"]), key=str)
    only_expert = sorted(set(expert["images"]) - set(pred["images"]) - set(failed), key=str)
    for what, keys_out in (("are not in the generated dataset", only_expert), ("failed in the generated run", failed)):
        if keys_out:
            log.warning("%d expert images %s and are left out (first: %s)", len(keys_out), what, keys_out[0])
    return common, {
        "images": len(common),
        "images_only_in_expert": len(only_expert),
        "images_only_in_pred": len(set(pred["images"]) - set(expert["images"])),
        "images_failed_in_pred": len(failed),
        "expert_crowd_skipped": expert.get("crowd_skipped", 0),
    }


def sample(images: dict) -> list:
    return sorted(images, key=str)[:3]


def check_size(key, pred_image: dict, expert_image: dict) -> None:
    a = (pred_image["height"], pred_image["width"])
    b = (expert_image["height"], expert_image["width"])
    if a != b:
        raise AuditError(
            f"image {key}: generated masks are {a[0]}x{a[1]} (HxW) but expert masks are {b[0]}x{b[1]}. "
            "Both sides must be drawn on the same image size: resize one side's masks to the other, or check "
            "that both refer to the same image (EXIF rotation, downscaled copies)"
        )


def evaluate_image(key, pred: dict, expert: dict, min_iou: float) -> dict:
    """Both sides' masks of one image, their [P, E] IoU matrix and the one-to-one pairs."""
    img = expert["images"][key]
    p, e = pred["masks"].get(key, []), expert["masks"].get(key, [])
    ids = {"image_id": pred["images"][key]["image_id"], "expert_image_id": img["image_id"]}
    iou = rle.iou_matrix([m["counts"] for m in p], [m["counts"] for m in e], img["height"], img["width"])  # [P, E]
    return {
        **img,
        **ids,
        "key": key,
        "pred": p,
        "expert": e,
        "iou": iou,
        "pairs": [(i, j) for i, j, _ in exact_pairs(iou, min_iou)],
        "min_iou": min_iou,
        "boundary_cache": {},
    }


def mask_rows(img: dict, pairs: list[tuple[int, int]], pred_indices, boundary_ratio: float) -> list[dict]:
    """One row per expert mask (with its match, if any) and one per unmatched generated mask."""
    by_expert = {e: p for p, e in pairs}
    matched_pred = set(by_expert.values())
    rows = []
    for e, m in enumerate(img["expert"]):
        p = by_expert.get(e)
        rows.append(row(img, p, e, metrics.size_class(m["area"]), boundary_ratio))
    for p in pred_indices:
        if p not in matched_pred:
            rows.append(row(img, p, None, metrics.size_class(img["pred"][p]["area"]), boundary_ratio))
    return rows


def row(img: dict, p, e, size: str, boundary_ratio: float) -> dict:
    pm = img["pred"][p] if p is not None else {}
    both = p is not None and e is not None
    return {
        "file_name": img["file_name"],
        "image_id": img["image_id"],
        "expert_image_id": img["expert_image_id"],
        "pred_mask_id": pm.get("mask_id"),
        "expert_mask_id": img["expert"][e]["mask_id"] if e is not None else None,
        "pred_index": p,
        "expert_index": e,
        "iou": float(img["iou"][p, e]) if both else None,
        "boundary_iou": pair_boundary_iou(img, p, e, boundary_ratio) if both else None,
        "pred_area": pm.get("area"),
        "expert_area": img["expert"][e]["area"] if e is not None else None,
        "size": size,
        "score": pm.get("score"),
        "stage": pm.get("stage"),
        "source": pm.get("source"),
    }


def pair_boundary_iou(img: dict, p: int, e: int, ratio: float) -> float:
    """Boundary IoU of one pair, computed once per image and pair."""
    cache = img["boundary_cache"]
    if (p, e) not in cache:
        h, w = img["height"], img["width"]
        a = rle.decode(img["pred"][p]["counts"], h, w)
        b = rle.decode(img["expert"][e]["counts"], h, w)
        cache[(p, e)] = boundary_iou(a, b, band_width(h, w, ratio))
    return cache[(p, e)]


def size_groups(rows: list[dict], ar: dict) -> dict:
    """summarize() and AR per object size."""
    out = metrics.by_size(rows)
    for name in metrics.SIZES:
        out[name].update(ar[name])
    return out


def pred_groups(images: list[dict], field: str, min_iou: float, boundary_ratio: float) -> tuple[dict, dict]:
    """The audit redone with only the generated masks of each stage (or source), against all expert masks.

    Returns ({value: figures}, {value: rows}).
    """
    values = sorted({m[field] for img in images for m in img["pred"]})
    out, all_rows = {}, {}
    for value in values:
        rows, subsets = [], []
        for img in images:
            keep = [i for i, m in enumerate(img["pred"]) if m[field] == value]
            pairs = [(keep[r], c) for r, c, _ in exact_pairs(img["iou"][keep], min_iou)] if keep else []
            rows += mask_rows(img, pairs, keep, boundary_ratio)
            subsets.append({**img, "pred": [img["pred"][i] for i in keep]})
        out[value] = {**metrics.summarize(rows), **metrics.coco_ar(subsets)["all"]}
        all_rows[value] = rows
    return out, all_rows
