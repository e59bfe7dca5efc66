"""COCO instances JSON: load; build image entries, annotation dicts and categories; write atomically;
evaluate with pycocotools' COCOeval.

Every COCO document the project writes is built here (importers/coco.py reads segmentations).
Annotations carry compressed RLE: {"size": [height, width], "counts": str}.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from data_engine.io import rle
from data_engine.io.atomic import write_text_atomic
from data_engine.io.inputs import read_json

LABEL = "object"  # the one class-agnostic category


def load(path: str | Path):
    """The parsed COCO file (io.inputs.read_json: an InputError when it is not readable JSON)."""
    return read_json(path, "COCO file")


def write(path: str | Path, images: list[dict], annotations: list[dict], categories=None) -> None:
    """A COCO instances file, written atomically (one "object" category unless `categories` are given)."""
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": LABEL, "supercategory": LABEL}],
    }
    write_text_atomic(json.dumps(doc, default=to_builtin), path)


def image_entry(image: dict, image_id: int, **fields) -> dict:
    """The COCO image entry of an image (file_name, height, width) under `image_id`, then any `fields`."""
    return {
        "id": image_id,
        "file_name": image["file_name"],
        "height": image["height"],
        "width": image["width"],
        **fields,
    }


def annotation(
    ann_id: int,
    image_id: int,
    counts: str,
    height: int,
    width: int,
    *,
    area: int | None = None,
    bbox: list[float] | None = None,
    category_id: int = 1,
    iscrowd: int = 0,
    **fields,
) -> dict:
    """One COCO annotation of an RLE mask (compressed counts of a height x width image): its area and XYWH
    box (computed from the RLE unless given), then any other `fields` (score, provenance)."""
    if area is None:
        area = int(rle.area([counts], height, width)[0])
    if bbox is None:
        bbox = rle.bbox([counts], height, width)[0].tolist()
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "segmentation": segmentation(counts, height, width),
        "area": area,
        "bbox": bbox,
        **fields,
    }


def segmentation(counts: str, height: int, width: int) -> dict:
    """A mask's COCO (and SA-1B) segmentation: compressed RLE counts with the image size."""
    return {"size": [height, width], "counts": counts}


def row_annotation(row: dict, ann_id: int, image_id: int, **fields) -> dict:
    """The COCO annotation of a mask row (io.dataset.MASK_SCHEMA: its RLE, area and box)."""
    counts, height, width = row["segmentation"], row["height"], row["width"]
    return annotation(ann_id, image_id, counts, height, width, area=row["area"], bbox=row["bbox"], **fields)


# A dataset's mask row carries these into its COCO annotation (stage=export, Dataset.to_coco); the last two
# are the mask's place in its image's hierarchy (io/hierarchy.py)
PROVENANCE = (
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
    "stage",
    "source",
    "model",
    "parent_mask_id",
    "depth",
)


def dataset_annotation(row: dict) -> dict:
    """A dataset's mask row as a COCO annotation under its own ids: score = predicted_iou, then its provenance."""
    fields = {k: row[k] for k in PROVENANCE}
    return row_annotation(row, row["mask_id"], row["image_id"], score=row["predicted_iou"], **fields)


def categories(labels: list[str]) -> tuple[list[dict], dict[str, int]]:
    """(COCO categories of the labels, {label: category id}): ids 1..N in the labels' order."""
    ids = {label: k + 1 for k, label in enumerate(labels)}
    return [{"id": ids[label], "name": label, "supercategory": LABEL} for label in labels], ids


def evaluate(truth: dict, results: list[dict], iou_type: str, max_dets):
    """The pycocotools COCOeval of COCO `results` (iou_type "segm" or "bbox") against the ground-truth document
    `truth`, class-agnostic (useCats=0) with maxDets = max_dets: evaluated and accumulated, its printing
    silenced. No results count as an empty result set."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        if results:
            found = gt.loadRes(results)
        else:  # loadRes refuses an empty list
            found = COCO()
            found.dataset = {"images": truth["images"], "annotations": [], "categories": truth["categories"]}
            found.createIndex()
        evaluator = COCOeval(gt, found, iou_type)
        evaluator.params.useCats = 0
        evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
