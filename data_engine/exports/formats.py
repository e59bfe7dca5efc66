"""Exports of a project dataset: SA-1B per-image JSON, one COCO instances JSON, PNG instance labels.

- sa1b: `<out>/sa1b/<file_name stem>.json` per image with SA-1B's released fields and two extra keys,
  `parent_mask_id` and `depth` (the masks' hierarchy, io/hierarchy.py); `read_sa1b` reads such a folder
  back into mask rows.
- coco: `<out>/coco/instances.json`, one "object" category, RLE segmentations; image and annotation
  ids are the dataset's image_id and mask_id; `parent_mask_id` and `depth` as extra fields.
- coco_polygons: `<out>/coco_polygons/instances.json`, as coco with polygon segmentations
  (exports/polygons.py: simplified to `polygon_tolerance` px, holes filled).
- png: `<out>/png/layer0/<file_name stem>.png`, pixel value = instance number (0 = background;
  8-bit, or 16-bit above 255 instances). A label image cannot hold overlapping masks, so masks that
  overlap one already placed go to `layer1/`, `layer2/`, ...; every layer folder is a complete
  instance-label set, and together they hold every mask exactly.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from data_engine.errors import UserError
from data_engine.exports import polygons
from data_engine.io import coco, rle
from data_engine.io.atomic import atomic_path, write_text_atomic
from data_engine.io.dataset import Dataset, mask_row
from data_engine.io.inputs import read_json

SA1B_FIELDS = ("bbox", "area", "predicted_iou", "stability_score", "crop_box", "point_coords")
HIERARCHY_FIELDS = ("parent_mask_id", "depth")  # io/hierarchy.py; extra keys in the sa1b and coco exports


class ExportError(UserError, ValueError):
    """The dataset cannot be exported as asked; the message says what to do."""


def export(dataset: str | Path, out_dir: str | Path, fmt: str, polygon_tolerance: float = polygons.TOLERANCE) -> dict:
    """Write `dataset` in format `fmt` under out_dir/fmt; returns counts and the written path.
    polygon_tolerance (px) applies to coco_polygons."""
    if fmt not in WRITERS:
        raise ExportError(f"export.format={fmt!r}: choose one of {sorted(WRITERS)}")
    images, masks = Dataset.open(dataset, "export.dataset", needs=("masks",)).by_image()
    target = Path(out_dir) / fmt
    options = {"polygon_tolerance": polygon_tolerance} if fmt == "coco_polygons" else {}
    written = WRITERS[fmt](images, masks, target, **options)
    return {
        "format": fmt,
        "images": len(images),
        "masks": sum(len(m) for m in masks.values()),
        "path": str(target),
        **written,
    }


def stem_path(file_name: str, suffix: str) -> PurePosixPath:
    """The image's relative path with its extension replaced (sub-folders kept)."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ExportError(f"file_name {file_name!r} is not a path under the image folder; cannot name its export")
    return path.with_suffix(suffix)


def check_unique(images: list[dict], suffix: str) -> None:
    """Two images whose names differ only in extension (a.jpg, a.png) would share one output file."""
    seen: dict[PurePosixPath, str] = {}
    for img in images:
        target = stem_path(img["file_name"], suffix)
        if target in seen:
            raise ExportError(
                f"{seen[target]} and {img['file_name']} would both be written to {target}; rename one of the images"
            )
        seen[target] = img["file_name"]


# ---------------------------------------------------------------------------------------------
# SA-1B per-image JSON
# ---------------------------------------------------------------------------------------------


def write_sa1b(images: list[dict], masks: dict, out_dir: Path) -> dict:
    """One JSON per image: {"image": {...}, "annotations": [...]}; ids are the dataset's image_id and mask_id."""
    check_unique(images, ".json")
    for img in images:
        rows = masks.get(img["file_name"], [])
        doc = {
            "image": {k: img[k] for k in ("image_id", "width", "height", "file_name")},
            "annotations": [{**sa1b_annotation(r), **{k: r.get(k) for k in HIERARCHY_FIELDS}} for r in rows],
        }
        write_text_atomic(json.dumps(doc), out_dir / stem_path(img["file_name"], ".json"))
    return {"files": len(images)}


def sa1b_annotation(row: dict) -> dict:
    return {
        "id": row["mask_id"],
        "segmentation": coco.segmentation(row["segmentation"], row["height"], row["width"]),
        **{k: row[k] for k in SA1B_FIELDS},
    }


def read_sa1b(folder: str | Path) -> tuple[list[dict], list[dict]]:
    """(image rows, mask rows in MASK_SCHEMA) from a folder of SA-1B per-image JSON files."""
    images, masks = [], []
    for path in sorted(p for p in Path(folder).rglob("*.json") if not p.name.startswith(".")):  # not temp files
        doc = read_json(path, "SA-1B file")
        img = doc["image"]
        images.append({k: img[k] for k in ("image_id", "file_name", "height", "width")})
        for ann in doc["annotations"]:
            if list(ann["segmentation"]["size"]) != [img["height"], img["width"]]:
                raise ExportError(
                    f"{path}: annotation {ann['id']} has size {ann['segmentation']['size']}, "
                    f"the image is {[img['height'], img['width']]}"
                )
            fields = {k: ann.get(k) for k in SA1B_FIELDS + HIERARCHY_FIELDS}
            counts = ann["segmentation"]["counts"]
            masks.append(mask_row(img, counts, stage="auto", source="sa1b", mask_id=ann["id"], **fields))
    return images, masks


# ---------------------------------------------------------------------------------------------
# COCO instances JSON
# ---------------------------------------------------------------------------------------------


def write_coco(images: list[dict], masks: dict, out_dir: Path, polygon_tolerance: float | None = None) -> dict:
    """instances.json with one "object" category; image and annotation ids are the dataset's image_id and
    mask_id; score = predicted_iou, as COCO results carry it. With polygon_tolerance (px), segmentations
    are polygons (exports/polygons.py)."""
    coco_images, annotations = [], []
    for img in images:
        coco_images.append(coco.image_entry(img, img["image_id"]))
        annotations += [coco.dataset_annotation(row) for row in masks.get(img["file_name"], [])]
    conversion = {}
    if polygon_tolerance is not None:
        annotations, conversion = polygons.to_polygons(annotations, polygon_tolerance)
    path = out_dir / "instances.json"
    coco.write(path, coco_images, annotations)
    return {"files": 1, **conversion}


def write_coco_polygons(
    images: list[dict], masks: dict, out_dir: Path, polygon_tolerance: float = polygons.TOLERANCE
) -> dict:
    """instances.json as write_coco writes it, with polygon segmentations simplified to polygon_tolerance px."""
    return write_coco(images, masks, out_dir, polygon_tolerance)


# ---------------------------------------------------------------------------------------------
# PNG instance-label images
# ---------------------------------------------------------------------------------------------


def write_png(images: list[dict], masks: dict, out_dir: Path) -> dict:
    """Label images per layer; returns how many layers the most overlapped image needed."""
    check_unique(images, ".png")
    depth = 1
    for img in images:
        rows = masks.get(img["file_name"], [])
        decoded = [rle.decode(r["segmentation"], img["height"], img["width"]) for r in rows]
        layers = label_layers(decoded, img["height"], img["width"])
        depth = max(depth, len(layers))
        for i, labels in enumerate(layers):
            write_png_atomic(labels, out_dir / f"layer{i}" / stem_path(img["file_name"], ".png"))
    return {"files": len(images), "layers": depth}


def label_layers(masks: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    """First-fit: each mask (in order) takes the next number in the first layer where it overlaps nothing."""
    layers = [np.zeros((height, width), np.int64)]
    counts = [0]
    for mask in masks:
        free = next((i for i, layer in enumerate(layers) if not layer[mask].any()), None)
        if free is None:
            layers.append(np.zeros((height, width), np.int64))
            counts.append(0)
            free = len(layers) - 1
        counts[free] += 1
        layers[free][mask] = counts[free]
    return layers


def write_png_atomic(labels: np.ndarray, path: Path) -> None:
    """8-bit PNG when the labels fit, else 16-bit; written under a temporary name, then renamed."""
    top = int(labels.max(initial=0))
    if top > 65535:
        raise ExportError(f"{path}: {top} masks in one label image; 16-bit PNG holds at most 65535")
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), labels.astype(np.uint8 if top <= 255 else np.uint16)):
            raise ExportError(f"could not write {path}")


WRITERS = {"sa1b": write_sa1b, "coco": write_coco, "coco_polygons": write_coco_polygons, "png": write_png}
