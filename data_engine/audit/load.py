"""Read one side of an audit (a project Parquet dataset or a COCO instances JSON) into one shape.

A side is {"images": {key: image}, "masks": {key: [mask]}, "failed": [key], "kind", "path"}, where
an image is {file_name, image_id, height, width} and a mask is {mask_id, counts, area, score, stage, source}
(mask_id: the dataset's mask_id, or the COCO annotation's id).
The key is the image's file_name (posix, relative to the image root) or its image_id.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from data_engine.errors import UserError
from data_engine.importers.coco import segmentation_counts
from data_engine.importers.validate import Rejected
from data_engine.io import rle
from data_engine.io.coco import load as load_coco_file
from data_engine.io.dataset import Dataset
from data_engine.io.inputs import InputError


class AuditError(UserError, ValueError):
    """Audit input that cannot be used; the message says what to do."""


def load_side(
    path: str | Path | None,
    role: str,
    match_by: str = "file_name",
    score: str = "predicted_iou",
    max_depth: int | None = None,
) -> dict:
    """The side at `path` (a dataset folder or a .json file); `role` (pred/expert) names it in errors. With
    `max_depth`, masks deeper in their image's hierarchy (a `depth` column or key, io/hierarchy.py) are left
    out: 0 keeps only masks no other mask holds; masks without a depth are kept."""
    if not path:
        example = "out/auto" if role == "pred" else "data_engine/samples/instances.json"
        raise AuditError(
            f"audit.{role} is not set: give a dataset folder written by data-engine or a COCO "
            f"instances JSON, e.g. audit.{role}={example}"
        )
    path = Path(path).expanduser()
    if path.is_dir():
        side = load_dataset(path, role, match_by, score, max_depth)
    elif path.is_file() and path.suffix.lower() == ".json":
        side = load_coco(path, role, match_by, score, max_depth)
    else:
        raise AuditError(
            f"audit.{role}={path} is neither a dataset folder (with masks/ and images/) nor a COCO instances .json file"
        )
    side.update(kind="dataset" if path.is_dir() else "coco", path=str(path.resolve()))
    return side


def image_key(row: dict, match_by: str):
    """How an image is found on the other side: its normalised file_name, or its id."""
    if match_by == "image_id":
        value = row["image_id"]
        return int(value) if str(value).lstrip("-").isdigit() else str(value)
    return posixpath.normpath(str(row["file_name"]).replace("\\", "/")).lstrip("/")


def too_deep(depth, max_depth: int | None) -> bool:
    return max_depth is not None and depth is not None and depth > max_depth


def load_dataset(path: Path, role: str, match_by: str, score: str, max_depth: int | None = None) -> dict:
    """Project dataset: images/ gives the image set and failures; masks/ the masks."""
    dataset = Dataset.open(path, f"audit.{role}", needs=("masks",))
    images, masks, failed = {}, {}, []
    # Image set: every ok image of images/ (failed ones are listed apart)
    for row in dataset.images().to_pylist():
        key = image_key(row, match_by)
        if row["status"] == "failed":
            failed.append(key)
        else:
            images[key] = image_record(row)
    # Masks; an image that only appears in masks/ (some importers) joins the image set
    columns = ["mask_id", "image_id", "file_name", "height", "width", "segmentation", "area", score, "stage", "source"]
    for row in dataset.masks(columns=[*columns, "depth"]).to_pylist():
        key = image_key(row, match_by)
        images.setdefault(key, image_record(row))
        if too_deep(row["depth"], max_depth):
            continue
        masks.setdefault(key, []).append(
            mask_record(row["mask_id"], row["segmentation"], row["area"], row.get(score), row["stage"], row["source"])
        )
    return {"images": images, "masks": masks, "failed": sorted(failed, key=str)}


def load_coco(path: Path, role: str, match_by: str, score: str, max_depth: int | None = None) -> dict:
    """COCO instances JSON (polygons or RLE); crowd annotations are left out and counted."""
    try:
        doc = load_coco_file(path)
    except InputError as err:
        raise AuditError(f"audit.{role}: {err}") from None
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise AuditError(
            f"audit.{role}={path} is not a COCO instances file (needs 'images' and 'annotations'); "
            "a detection results list needs its images: convert it with the stage-1 importers"
        )
    by_id = {img["id"]: {**img, "image_id": img["id"]} for img in doc["images"]}
    images = {image_key(img, match_by): image_record(img) for img in by_id.values()}
    masks, crowd = {}, 0
    for ann in doc["annotations"]:
        if ann.get("iscrowd"):
            crowd += 1
            continue
        if too_deep(ann.get("depth"), max_depth):
            continue
        img = by_id.get(ann["image_id"])
        if img is None:
            raise AuditError(
                f"{path}: annotation {ann.get('id')} refers to image_id {ann['image_id']}, which is not in 'images'"
            )
        masks.setdefault(image_key(img, match_by), []).append(coco_mask(ann, img, path, score))
    return {"images": images, "masks": masks, "failed": [], "crowd_skipped": crowd}


def coco_mask(ann: dict, img: dict, path: Path, score: str) -> dict:
    h, w = int(img["height"]), int(img["width"])
    try:
        counts, _ = segmentation_counts(ann.get("segmentation"), h, w)
    except Rejected as err:
        raise AuditError(f"{path}: annotation {ann.get('id')} of {img['file_name']}: {err}") from None
    value = ann.get(score, ann.get("score"))
    ann_id = ann.get("id") if isinstance(ann.get("id"), int) else None
    return mask_record(ann_id, counts, None, value, ann.get("stage", "coco"), ann.get("source", "coco"), h, w)


def image_record(row: dict) -> dict:
    return {
        "file_name": row["file_name"],
        "image_id": row["image_id"],
        "height": int(row["height"]),
        "width": int(row["width"]),
    }


def mask_record(mask_id, counts: str, area, score, stage, source, height: int = 0, width: int = 0) -> dict:
    """A mask as the audit uses it; area computed from the RLE where the source lacks it."""
    if area is None:
        area = int(rle.area([counts], height, width)[0])
    return {
        "mask_id": mask_id,
        "counts": counts,
        "area": int(area),
        "score": None if score is None else float(score),
        "stage": stage or "unknown",
        "source": source or "unknown",
    }
