"""COCO instances JSON: read any segmentation encoding as compressed RLE, write RLE annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from data_engine.io.atomic import write_text_atomic


def segmentation_to_counts(segmentation, height: int, width: int) -> str:
    """Polygons, uncompressed RLE or compressed RLE -> compressed RLE counts string.

    Polygons are rasterised by pycocotools (several polygons of one object are merged).
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            raise ValueError("polygon segmentation with fewer than 3 points")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        if list(segmentation.get("size", [])) != [height, width]:
            raise ValueError(f"RLE size {segmentation.get('size')} differs from the image size {[height, width]}")
        rle = {"size": [height, width], "counts": segmentation["counts"]}
    else:
        raise ValueError(f"unknown segmentation encoding: {type(segmentation).__name__}")
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def load(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)


def write(path: str | Path, images: list[dict], annotations: list[dict], categories=None) -> None:
    """A COCO instances file, written atomically; `annotations` carry segmentation as {'size', 'counts': str}."""
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    write_text_atomic(json.dumps(doc, default=to_builtin), path)


def to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
