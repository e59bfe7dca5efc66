"""COCO instances JSON (also CVAT's "COCO 1.0" export): import every annotation; export mask rows as COCO.

Polygons, uncompressed RLE (iscrowd) and compressed RLE all become compressed RLE, rasterised by
pycocotools exactly as COCO's own API does. Keys a tool adds to an annotation (CVAT's `attributes`,
an `annotator`, a time) are kept in the row's `extra`.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_engine.importers.results import Results
from data_engine.importers.validate import (
    ImageSizes,
    Rejected,
    Seen,
    polygons_to_counts,
    read_json_file,
    rle_to_counts,
    safe_name,
)
from data_engine.io import coco as coco_json
from data_engine.io.inputs import InputError

STANDARD_KEYS = {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}


def read(
    path: Path, image_root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False, fmt: str = "coco"
) -> Results:
    """Import a COCO instances file; one report row per entry of its `annotations` list."""
    return import_document(load_document(path), path, image_root, fmt, max_pixels, follow_symlinks)


def import_document(
    doc: dict,
    path: Path,
    image_root: Path | None,
    fmt: str = "coco",
    max_pixels: int | None = None,
    follow_symlinks: bool = False,
) -> Results:
    """Import a loaded COCO document (`load_document`); `path` names it in the report."""
    res = Results(fmt)
    res.expect(len(doc["annotations"]))
    images = image_table(doc["images"])
    labels = {c.get("id"): c.get("name") for c in doc.get("categories") or [] if isinstance(c, dict)}
    sizes, seen = ImageSizes(image_root, max_pixels, follow_symlinks), Seen("annotation")
    for index, ann in enumerate(doc["annotations"]):
        import_one(res, path, index, ann, images, labels, sizes, seen)
    return res


def read_cvat(
    path: Path, image_root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False
) -> Results:
    """CVAT's COCO 1.0 export is COCO; its per-annotation `attributes` are kept in `extra`."""
    return read(path, image_root, max_pixels, follow_symlinks, fmt="cvat_coco")


def load_document(path: Path) -> dict:
    doc = read_json_file(path, "coco", "one instances JSON file")
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("annotations"), list)
        or not isinstance(doc.get("images"), list)
    ):
        raise InputError(f"{path} is not a COCO instances file: it needs 'images' and 'annotations' lists")
    return doc


def image_table(entries: list) -> dict:
    """image id -> {'id', 'file_name', 'declared'} or the reason every annotation of that image is rejected."""
    table = {}
    for entry in entries:
        key = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(key, (int, str)):
            continue  # an image no annotation can reference
        if key in table:
            table[key] = f"duplicate id: image id {key} appears more than once in 'images'"
            continue
        table[key] = image_entry(entry)
    return table


def image_entry(entry: dict):
    try:
        name = safe_name(entry.get("file_name"))
    except Rejected as err:
        return str(err)
    h, w = entry.get("height"), entry.get("width")
    return {"id": entry["id"], "file_name": name, "declared": (h, w) if h is not None and w is not None else None}


def import_one(
    res: Results, path: Path, index: int, ann, images: dict, labels: dict, sizes: ImageSizes, seen: Seen
) -> None:
    """One annotation -> a mask row, or a rejection with its reason."""
    key = ann.get("id", f"#{index}") if isinstance(ann, dict) else f"#{index}"
    entry = image_of(ann, images)
    name = entry["file_name"] if isinstance(entry, dict) else None  # named in the report whatever the reason
    try:
        if not isinstance(ann, dict):
            raise Rejected(f"bad annotation: a {type(ann).__name__}, not a JSON object")
        seen.check(ann.get("id"), f"index {index}")
        check_image(entry, ann.get("image_id"))
        height, width = sizes.check(name, entry["declared"])
        counts, notes = segmentation_counts(ann.get("segmentation"), height, width)
    except Rejected as err:
        res.rejected(path, key, name, str(err))
        return
    res.add_mask(path, key, name, height, width, counts, provenance(ann, entry, labels), notes)


def image_of(ann, images: dict):
    """The image table's entry for the annotation's image_id (None when there is none)."""
    image_id = ann.get("image_id") if isinstance(ann, dict) else None
    return images.get(image_id) if isinstance(image_id, (int, str)) else None


def check_image(entry, image_id) -> None:
    """Reject an annotation whose image is not listed, or listed unusably (the table's reason)."""
    if entry is None:
        raise Rejected(f"unknown image: image_id {image_id!r} is not in 'images'")
    if isinstance(entry, str):
        raise Rejected(entry)


def segmentation_counts(segmentation, height: int, width: int) -> tuple[str, list[str]]:
    """Any COCO segmentation -> (compressed RLE counts, notes)."""
    if not segmentation:
        raise Rejected("no segmentation: a box-only (detection) annotation has no mask")
    if isinstance(segmentation, list):
        return polygons_to_counts(segmentation, height, width)
    if isinstance(segmentation, dict):
        return rle_to_counts(segmentation, height, width), []
    raise Rejected(f"bad segmentation: a {type(segmentation).__name__}, not polygons or RLE")


def provenance(ann: dict, entry: dict, labels: dict) -> dict:
    """Original ids, label, iscrowd, and every key the exporting tool added."""
    category = ann.get("category_id")
    extra = {
        "original_id": ann.get("id"),
        "image_original_id": entry["id"],
        "category_id": category,
        "label": labels.get(category) if isinstance(category, (int, str)) else None,
        "iscrowd": int(bool(ann.get("iscrowd", 0))),
    }
    extra.update({k: v for k, v in ann.items() if k not in STANDARD_KEYS})
    return extra


# Export


def export(rows: list[dict], path: str | Path) -> dict:
    """Mask rows (`MASK_SCHEMA` dicts) -> a COCO instances file with compressed RLE segmentations.

    Image ids are 1..N in file-name order; categories come from each row's extra `label` ("object"
    when it has none). Returns {"images": N, "annotations": M}.
    """
    by_name = {r["file_name"]: r for r in rows}
    image_ids = {name: i + 1 for i, name in enumerate(sorted(by_name))}
    categories, category_ids = coco_json.categories(sorted({label_of(r) for r in rows}))
    images = [coco_json.image_entry(by_name[name], image_id) for name, image_id in image_ids.items()]
    annotations = [coco_annotation(i + 1, r, image_ids, category_ids) for i, r in enumerate(rows)]
    coco_json.write(path, images, annotations, categories)
    return {"images": len(images), "annotations": len(annotations)}


def coco_annotation(ann_id: int, row: dict, image_ids: dict, category_ids: dict) -> dict:
    """The COCO annotation of a mask row: its label's category, iscrowd and score as it was imported."""
    iscrowd = int(json.loads(row.get("extra") or "{}").get("iscrowd", 0))
    fields = {"source": row.get("source"), "stage": row.get("stage")}
    if row.get("predicted_iou") is not None:
        fields["score"] = float(row["predicted_iou"])
    category = category_ids[label_of(row)]
    return coco_json.row_annotation(
        row, ann_id, image_ids[row["file_name"]], category_id=category, iscrowd=iscrowd, **fields
    )


def label_of(row: dict) -> str:
    label = json.loads(row.get("extra") or "{}").get("label")
    return str(label) if label not in (None, "") else coco_json.LABEL
