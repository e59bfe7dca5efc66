"""Label Studio JSON export (a list of tasks): brush masks, polygons, rectangles and ellipses.

The unit of the report is a region: the result items of one annotation that share an `id` (a
region's geometry plus its per-region choices or text). Coordinates are percentages of
original_width / original_height; brush masks use Label Studio's own RLE (labelstudio_rle).
Results without geometry (choices for the whole image, relations) are reported as rejected, and so
are the regions of cancelled (skipped) annotations.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from data_engine.importers import labelstudio_rle
from data_engine.importers.results import Results
from data_engine.importers.shapes import box_polygon, ellipse_polygon
from data_engine.importers.validate import (
    ImageSizes,
    Rejected,
    Seen,
    mask_to_counts,
    or_none,
    points_to_flat,
    polygons_to_counts,
    read_json_file,
    safe_name,
)
from data_engine.io.inputs import IMAGE_EXTENSIONS, InputError, scan_folder

GEOMETRY = {
    "polygonlabels": "polygon",
    "polygon": "polygon",
    "rectanglelabels": "rectangle",
    "rectangle": "rectangle",
    "ellipselabels": "ellipse",
    "ellipse": "ellipse",
    "brushlabels": "brush",
    "brush": "brush",
}
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded file names with a hash


def read(path: Path, image_root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False) -> Results:
    """Import a Label Studio JSON export; one report row per region of every annotation."""
    tasks = load(path)
    res, sizes, names = (
        Results("labelstudio"),
        ImageSizes(image_root, max_pixels, follow_symlinks),
        BaseNames(image_root),
    )
    seen = {"task": Seen("task"), "annotation": Seen("annotation")}
    for index, task in enumerate(tasks):
        read_task(res, path, index, task, sizes, names, seen)
    return res


def load(path: Path) -> list:
    doc = read_json_file(path, "labelstudio", "the exported JSON file")
    if isinstance(doc, dict) and "data" in doc:
        return [doc]  # one task saved on its own
    if not isinstance(doc, list) or (doc and not any(isinstance(t, dict) and "annotations" in t for t in doc)):
        raise InputError(
            f"{path} is not a Label Studio JSON export: expected a list of tasks with 'annotations' "
            "(export as 'JSON', not 'JSON-MIN' or CSV)"
        )
    return doc


def read_task(res: Results, path: Path, index: int, task, sizes: ImageSizes, names: "BaseNames", seen: dict) -> None:
    units = task_units(task)
    res.expect(len(units))
    name = or_none(image_name, task, names) if isinstance(task, dict) else None  # named whatever the reason
    try:
        if not isinstance(task, dict):
            raise Rejected(f"bad task: a {type(task).__name__}, not a JSON object")
        seen["task"].check(task.get("id"), f"task index {index}")
        name = name or image_name(task, names)  # raises the reason where it had none
    except Rejected as err:
        for annotation, region_id, _ in units:
            res.rejected(path, unit_key(task, annotation, region_id), name, str(err))
        return
    for annotation, group in annotation_groups(units):
        read_annotation(res, path, task, annotation, group, name, sizes, seen["annotation"])


def task_units(task) -> list[tuple]:
    """(annotation, region id, result items) for every region; a malformed task or annotation is one unit."""
    if not isinstance(task, dict) or not isinstance(task.get("annotations", []), list):
        return [(None, "(task)", [])]
    units = []
    for annotation in task.get("annotations", []):
        result = annotation.get("result") if isinstance(annotation, dict) else None
        if not isinstance(result, list):
            units.append((annotation, "(annotation)", []))
            continue
        units.extend((annotation, region_id, items) for region_id, items in regions(result).items())
    return units


def regions(result: list) -> dict:
    """Result items grouped by region id (items without one stand alone)."""
    groups: dict = {}
    for i, item in enumerate(result):
        region_id = item.get("id") if isinstance(item, dict) and item.get("id") is not None else f"#{i}"
        groups.setdefault(str(region_id), []).append(item)
    return groups


def annotation_groups(units: list[tuple]) -> list[tuple]:
    """Units grouped by their annotation, in order."""
    groups: list[tuple] = []
    for annotation, region_id, items in units:
        if not groups or groups[-1][0] is not annotation:
            groups.append((annotation, []))
        groups[-1][1].append((region_id, items))
    return groups


def unit_key(task, annotation, region_id) -> str:
    task_id = task.get("id") if isinstance(task, dict) else None
    annotation_id = annotation.get("id") if isinstance(annotation, dict) else None
    return f"task {task_id} annotation {annotation_id} result {region_id}"


def read_annotation(res, path, task, annotation, group, name, sizes, seen: Seen) -> None:
    try:
        if not isinstance(annotation, dict) or not isinstance(annotation.get("result"), list):
            raise Rejected("bad annotation: not a JSON object with a 'result' list")
        seen.check(annotation.get("id"), f"task {task.get('id')}")
        if annotation.get("was_cancelled"):
            raise Rejected("cancelled: the annotator skipped this task")
    except Rejected as err:
        for region_id, _ in group:
            res.rejected(path, unit_key(task, annotation, region_id), name, str(err))
        return
    for region_id, items in group:
        import_region(res, path, task, annotation, region_id, items, name, sizes)


def import_region(res, path, task, annotation, region_id, items, name, sizes) -> None:
    key = unit_key(task, annotation, region_id)
    try:
        item = geometry_item(items)
        height, width = sizes.check(name, (item.get("original_height"), item.get("original_width")))
        if item.get("image_rotation"):
            raise Rejected(f"unsupported: the image was rotated {item['image_rotation']} degrees in Label Studio")
        counts, notes = region_counts(item, height, width)
    except Rejected as err:
        res.rejected(path, key, name, str(err))
        return
    res.add_mask(path, key, name, height, width, counts, provenance(task, annotation, region_id, items, item), notes)


def geometry_item(items: list) -> dict:
    found = [it for it in items if isinstance(it, dict) and it.get("type") in GEOMETRY]
    if not found:
        kinds = sorted({str(it.get("type")) if isinstance(it, dict) else type(it).__name__ for it in items})
        raise Rejected(f"not a region: result type {', '.join(kinds)} has no geometry")
    if not isinstance(found[0].get("value"), dict):
        raise Rejected("bad annotation: the result has no 'value' object")
    return found[0]


def region_counts(item: dict, height: int, width: int) -> tuple[str, list[str]]:
    """One geometry result -> (RLE counts, notes); x and width in % of the image width, y and height of its height."""
    kind, v = GEOMETRY[item["type"]], item["value"]
    sx, sy = width / 100.0, height / 100.0
    try:
        if kind == "polygon":
            flat = points_to_flat(v.get("points"))
            return polygons_to_counts([[c * (sx if k % 2 == 0 else sy) for k, c in enumerate(flat)]], height, width)
        if kind == "rectangle":
            x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
            box = box_polygon(x * sx, y * sy, (x + w) * sx, (y + h) * sy, float(v.get("rotation") or 0), "corner")
            return polygons_to_counts([box], height, width)
        if kind == "ellipse":
            cx, cy, rx, ry = (float(v[k]) for k in ("x", "y", "radiusX", "radiusY"))
            return polygons_to_counts(
                [ellipse_polygon(cx * sx, cy * sy, rx * sx, ry * sy, float(v.get("rotation") or 0))], height, width
            )
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise Rejected(f"bad annotation: {kind} value lacks or mangles {err}") from None
    return brush_counts(v, height, width), []


def brush_counts(value: dict, height: int, width: int) -> str:
    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        raise Rejected(f"unsupported: brush format {value.get('format')!r}; only 'rle' brush masks import")
    try:
        return mask_to_counts(labelstudio_rle.decode_mask(value["rle"], height, width))
    except (ValueError, TypeError) as err:
        raise Rejected(f"bad RLE: brush mask does not decode ({err})") from None


# Image references


def image_name(task: dict, names: "BaseNames") -> str:
    """The task's image as a name under the image root: the first candidate that exists there, else
    the one image anywhere under the root with a candidate's base name (uploads lose their folders)."""
    candidates = image_candidates(task)
    if names.root is None:
        return candidates[0]
    existing = [c for c in candidates if (names.root / c).is_file()]
    if existing:
        return existing[0]
    found = sorted({n for c in candidates for n in names.get(posixpath.basename(c))})
    if len(found) > 1:
        raise Rejected(f"ambiguous image: {', '.join(found)} under the image root all match {candidates[0]}")
    return found[0] if found else candidates[0]


class BaseNames:
    """Base name -> image names under the root, scanned once per import when first needed."""

    def __init__(self, root: Path | None):
        self.root, self.index = root, None

    def get(self, base: str) -> list[str]:
        if self.index is None:
            self.index = {}
            for name in scan_folder(self.root, IMAGE_EXTENSIONS)[0]:
                self.index.setdefault(posixpath.basename(name), []).append(name)
        return self.index.get(base, [])


def image_candidates(task: dict) -> list[str]:
    """Names the task's image may have: from data (upload, local-files, URL or path) and file_upload."""
    ref = image_reference(task.get("data"))
    parsed = urlparse(ref)
    query = parse_qs(parsed.query)
    if parsed.path.startswith("/data/local-files") and query.get("d"):
        names = path_tails(query["d"][0])  # the document root may lie above the image root
    elif parsed.path.startswith("/data/upload/") or parsed.scheme:
        base = posixpath.basename(unquote(parsed.path))
        names = [base, UPLOAD_PREFIX.sub("", base)]
    else:
        names = [ref]
    if isinstance(task.get("file_upload"), str):
        names += [task["file_upload"], UPLOAD_PREFIX.sub("", task["file_upload"])]
    return [safe_name(n) for n in dict.fromkeys(names) if n]


def path_tails(path: str) -> list[str]:
    """'a/b/c.png' -> ['a/b/c.png', 'b/c.png', 'c.png']: the path, then the path less its leading folders."""
    parts = path.split("/")
    return ["/".join(parts[i:]) for i in range(len(parts))]


def image_reference(data) -> str:
    """data['image'], else the one string value that names an image file."""
    if not isinstance(data, dict):
        raise Rejected("unknown image: the task has no 'data' object")
    if isinstance(data.get("image"), str) and data["image"]:
        return data["image"]
    found = [v for v in data.values() if isinstance(v, str) and urlparse(v).path.lower().endswith(IMAGE_EXTENSIONS)]
    if len(found) != 1:
        raise Rejected(f"unknown image: cannot tell which of the task's data keys {sorted(data)} is the image")
    return found[0]


def provenance(task: dict, annotation: dict, region_id: str, items: list, item: dict) -> dict:
    """Ids, labels, annotator, times, the control names, and per-region choices or text."""
    value = item["value"]
    labels = value.get(item["type"]) if item["type"].endswith("labels") else None
    extra = {
        "original_id": region_id,
        "task_id": task.get("id"),
        "annotation_id": annotation.get("id"),
        "label": labels[0] if labels else None,
        "labels": labels,
        "shape": GEOMETRY[item["type"]],
        "annotator": annotator(annotation.get("completed_by")),
        "time": annotation.get("updated_at") or annotation.get("created_at"),
        "seconds": annotation.get("lead_time"),
        "from_name": item.get("from_name"),
        "origin": item.get("origin"),
        "ground_truth": annotation.get("ground_truth"),
    }
    attributes = {it.get("from_name"): it.get("value") for it in items if isinstance(it, dict) and it is not item}
    if attributes:
        extra["attributes"] = attributes
    return {k: v for k, v in extra.items() if v is not None}


def annotator(completed_by):
    """completed_by is a user id, or a user object in newer exports."""
    if isinstance(completed_by, dict):
        return completed_by.get("email") or completed_by.get("username") or completed_by.get("id")
    return completed_by
