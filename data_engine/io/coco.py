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


def to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
