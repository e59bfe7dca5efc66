"""LabelMe JSON: one file per image, given as a file or a folder searched recursively for *.json.

Region shapes (polygon, rectangle, circle, mask) become masks; point and line shapes have no area
and are reported as rejected. `imagePath` is relative to the JSON file, as LabelMe writes it; when
that lands outside the image root, or on no file there, it is read relative to the image root.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from data_engine.importers.results import Results
from data_engine.importers.shapes import box_polygon, circle_polygon
from data_engine.importers.validate import (
    ImageSizes,
    Rejected,
    is_finite,
    mask_box,
    mask_to_counts,
    paste,
    points_to_flat,
    polygons_to_counts,
    read_mask,
    relative_to_root,
    safe_name,
)
from data_engine.io.inputs import InputError, read_json

FILE = "(file)"  # the report's annotation key for a whole file that could not be read


def read(path: Path, image_root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False) -> Results:
    """Import one LabelMe file or every *.json under a folder; one report row per shape."""
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path} holds no *.json files: give a LabelMe JSON file or a folder of them")
    root = (image_root or (path if path.is_dir() else path.parent)).resolve()
    res, sizes = Results("labelme"), ImageSizes(image_root, max_pixels, follow_symlinks)
    for file in files:
        read_file(res, file, root, sizes)
    return res


def read_file(res: Results, file: Path, root: Path, sizes: ImageSizes) -> None:
    doc = load(file)
    if isinstance(doc, str):
        res.expect(1)
        res.rejected(file, FILE, None, doc)
        return
    shapes = doc["shapes"]
    res.expect(len(shapes))
    name = None
    try:
        name = image_name(doc.get("imagePath"), file, root, sizes.root is not None)
        height, width = sizes.check(name, declared_size(doc))
    except Rejected as err:
        for i in range(len(shapes)):
            res.rejected(file, f"shapes[{i}]", name, str(err))
        return
    for i, shape in enumerate(shapes):
        import_shape(res, file, i, shape, name, height, width)


def load(file: Path):
    """The parsed document, or the reason the whole file is rejected."""
    try:
        doc = read_json(file, "LabelMe file")
    except InputError as err:
        return f"unreadable file: {err}"
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        return "not a LabelMe file: no 'shapes' list"
    return doc


def image_name(image_path, file: Path, root: Path, must_exist: bool) -> str:
    """The image's name under `root`: imagePath relative to the JSON file, else relative to the root."""
    if not isinstance(image_path, str) or not image_path.strip():
        raise Rejected("unknown image: the file has no imagePath")
    joined = file.resolve().parent / image_path.replace("\\", "/")
    candidates, reasons = [], []
    for make in (lambda: relative_to_root(joined, root, image_path), lambda: safe_name(image_path)):
        try:
            candidates.append(make())
        except Rejected as err:
            reasons.append(str(err))
    if not candidates:
        raise Rejected(reasons[0])
    if must_exist:
        return next((c for c in candidates if (root / c).is_file()), candidates[0])
    return candidates[0]


def declared_size(doc: dict):
    h, w = doc.get("imageHeight"), doc.get("imageWidth")
    return (h, w) if h is not None and w is not None else None


def import_shape(res: Results, file: Path, index: int, shape, name: str, height: int, width: int) -> None:
    key = f"shapes[{index}]"
    try:
        if not isinstance(shape, dict):
            raise Rejected(f"bad annotation: a {type(shape).__name__}, not a JSON object")
        counts, notes = shape_counts(shape, height, width)
    except Rejected as err:
        res.rejected(file, key, name, str(err))
        return
    res.add_mask(file, key, name, height, width, counts, provenance(shape, index), notes)


def shape_counts(shape: dict, height: int, width: int) -> tuple[str, list[str]]:
    """One LabelMe shape -> (RLE counts, notes)."""
    kind = shape.get("shape_type") or "polygon"  # LabelMe 3 and older wrote polygons without a type
    points = shape.get("points")
    if kind == "polygon" or (kind == "rectangle" and isinstance(points, list) and len(points) == 4):
        return polygons_to_counts([points_to_flat(points)], height, width)  # some forks store 4 corners
    if kind == "rectangle":
        (x0, y0), (x1, y1) = two_points(points, kind)
        return polygons_to_counts([box_polygon(x0, y0, x1, y1)], height, width)
    if kind == "circle":
        return polygons_to_counts([circle_polygon(*two_points(points, kind))], height, width)
    if kind == "mask":
        return mask_shape_counts(shape, height, width)
    raise Rejected(f"not a region: a LabelMe {kind!r} shape has no area")


def two_points(points, kind: str):
    flat = points_to_flat(points)
    if len(flat) != 4:
        raise Rejected(f"degenerate {kind}: needs exactly 2 points, got {len(flat) // 2}")
    if not all(is_finite(v) for v in flat):
        raise Rejected(f"degenerate {kind}: points {str(flat)[:60]} are not finite numbers")
    return (float(flat[0]), float(flat[1])), (float(flat[2]), float(flat[3]))


def mask_shape_counts(shape: dict, height: int, width: int) -> tuple[str, list[str]]:
    """A 'mask' shape: a base64 PNG of the box from its first point (x1, y1) to (x2, y2), inclusive.
    The box is checked against the image, and the PNG's header against the box, before it is decoded."""
    (x1, y1), (x2, y2) = two_points(shape.get("points"), "mask")
    left, top, box_w, box_h = mask_box(int(x1), int(y1), int(x2) - int(x1) + 1, int(y2) - int(y1) + 1, height, width)
    crop = read_mask(base64_png(shape.get("mask")), (box_h, box_w), height * width, binary, ("bad mask",) * 3)
    mask, clipped = paste(crop, left, top, height, width)
    return mask_to_counts(mask), ["clipped: mask reaches outside the image"] if clipped else []


def base64_png(text) -> io.BytesIO:
    if not isinstance(text, str) or not text:
        raise Rejected("bad mask: the mask shape has no base64 PNG")
    try:
        return io.BytesIO(base64.b64decode(text))
    except ValueError:
        raise Rejected("bad mask: the mask is not base64") from None


def binary(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L")) > 0


def provenance(shape: dict, index: int) -> dict:
    """Label, group, description, flags and any key a LabelMe fork adds (points and pixels left out)."""
    extra = {"shape_index": index, "original_id": index}
    extra.update({k: v for k, v in shape.items() if k not in ("points", "mask")})
    return extra
