"""COCO instances JSON files: load, and write RLE annotations atomically (importers/coco.py reads segmentations)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_engine.io.atomic import write_text_atomic
from data_engine.io.inputs import read_json


def load(path: str | Path):
    """The parsed COCO file (io.inputs.read_json: an InputError when it is not readable JSON)."""
    return read_json(path, "COCO file")


def write(path: str | Path, images: list[dict], annotations: list[dict], categories=None) -> None:
    """A COCO instances file, written atomically; `annotations` carry segmentation as {'size', 'counts': str}."""
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    write_text_atomic(json.dumps(doc, default=to_builtin), path)


def write_coco(path: str | Path, images: list[dict], masks: list[dict]) -> None:
    """A COCO instances file of dataset rows: image rows (image_id, file_name, height, width) and mask rows
    (io.dataset.MASK_SCHEMA) as RLE annotations; ids are the dataset's image_id and mask_id."""
    coco_images = [{"id": r["image_id"], **{k: r[k] for k in ("file_name", "height", "width")}} for r in images]
    write(path, coco_images, [annotation(row) for row in masks])


def annotation(row: dict) -> dict:
    """A mask row as a COCO annotation: RLE segmentation, area, bbox (XYWH), score = predicted_iou (as COCO
    results carry it), and the row's scores and provenance."""
    return {
        "id": row["mask_id"],
        "image_id": row["image_id"],
        "category_id": 1,
        "iscrowd": 0,
        "segmentation": {"size": [row["height"], row["width"]], "counts": row["segmentation"]},
        "area": row["area"],
        "bbox": row["bbox"],
        "score": row["predicted_iou"],
        **{
            k: row[k]
            for k in ("predicted_iou", "stability_score", "point_coords", "crop_box", "stage", "source", "model")
        },
    }


def to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
