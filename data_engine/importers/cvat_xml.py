"""CVAT for images 1.1 XML: every shape of every <image>; polygons, boxes, ellipses and masks import.

Give annotations.xml, the folder holding it, or the export's zip. A mask's `rle` lists run lengths
over its left/top/width/height box in row-major order, starting with a background run. Polylines,
points, skeletons, cuboids and tags have no area and are reported as rejected.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np

from data_engine.importers.results import Results
from data_engine.importers.shapes import box_polygon, ellipse_polygon
from data_engine.importers.validate import (
    ImageSizes,
    Rejected,
    Seen,
    mask_box,
    mask_to_counts,
    or_none,
    paste,
    polygons_to_counts,
    safe_name,
)
from data_engine.io.inputs import InputError

SHAPE_KEYS = ("label", "source", "occluded", "z_order", "group_id")


def read(path: Path, image_root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False) -> Results:
    """Import a CVAT for images 1.1 export; one report row per shape or tag."""
    root = load(path)
    meta = task_meta(root.find("meta"))
    res, sizes, seen = Results("cvat_xml"), ImageSizes(image_root, max_pixels, follow_symlinks), Seen("image")
    for image in root.findall("image"):
        read_image(res, path, image, meta, sizes, seen)
    return res


def load(path: Path) -> ET.Element:
    """The <annotations> element of an XML file, a folder holding annotations.xml, or an export zip."""
    try:
        if path.is_dir():
            path = path / "annotations.xml"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                root = ET.fromstring(archive.read("annotations.xml"))
        else:
            root = ET.parse(path).getroot()
    except (OSError, KeyError, ET.ParseError) as err:
        raise InputError(
            f"{path}: not a readable CVAT XML export ({type(err).__name__}: {err}); give "
            "annotations.xml, its folder or the export zip"
        ) from None
    if root.tag != "annotations":
        raise InputError(f"{path}: the root element is <{root.tag}>, a CVAT export has <annotations>")
    if root.find("track") is not None:
        raise InputError(
            f"{path} is a 'CVAT for video' export (it has <track> elements); export the task "
            "as 'CVAT for images 1.1' instead"
        )
    return root


def task_meta(meta) -> dict:
    """Provenance from <meta>: task or job id and name, owner, assignee, last update, export time."""
    if meta is None:
        return {}
    found = {"exported_at": meta.findtext("dumped")}
    for kind in ("task", "job", "project"):
        node = meta.find(kind)
        if node is not None:
            found.update(
                {
                    f"{kind}_id": node.findtext("id"),
                    f"{kind}_name": node.findtext("name"),
                    "task_owner": node.findtext("owner/username"),
                    "annotator": node.findtext("assignee/username"),
                    "time": node.findtext("updated"),
                }
            )
            break
    return {k: v for k, v in found.items() if v}


def read_image(res: Results, path: Path, image: ET.Element, meta: dict, sizes: ImageSizes, seen: Seen) -> None:
    shapes = list(image)
    res.expect(len(shapes))
    name = or_none(safe_name, image.get("name"))  # named in the report whatever the reason
    try:
        seen.check(image.get("id"), f"image {image.get('name')!r}")
        name = name or safe_name(image.get("name"))  # raises the reason where it had none
        height, width = sizes.check(name, (number(image, "height"), number(image, "width")))
    except Rejected as err:
        for i, element in enumerate(shapes):
            res.rejected(path, shape_key(image, i, element), name, str(err))
        return
    for i, element in enumerate(shapes):
        import_shape(res, path, image, i, element, name, height, width, meta)


def shape_key(image: ET.Element, index: int, element: ET.Element) -> str:
    return f"image {image.get('id')} {element.tag}[{index}]"


def import_shape(res, path, image, index, element, name, height, width, meta) -> None:
    key = shape_key(image, index, element)
    try:
        counts, notes = shape_counts(element, height, width)
    except Rejected as err:
        res.rejected(path, key, name, str(err))
        return
    res.add_mask(path, key, name, height, width, counts, provenance(element, image, index, meta), notes)


def shape_counts(element: ET.Element, height: int, width: int) -> tuple[str, list[str]]:
    """One CVAT shape element -> (RLE counts, notes)."""
    tag = element.tag
    rotation = number(element, "rotation") if element.get("rotation") else 0.0
    if tag == "polygon":
        return polygons_to_counts([parse_points(element.get("points"))], height, width)
    if tag == "box":
        corners = [number(element, k) for k in ("xtl", "ytl", "xbr", "ybr")]
        return polygons_to_counts([box_polygon(*corners, rotation=rotation)], height, width)
    if tag == "ellipse":
        cx, cy, rx, ry = (number(element, k) for k in ("cx", "cy", "rx", "ry"))
        return polygons_to_counts([ellipse_polygon(cx, cy, rx, ry, rotation)], height, width)
    if tag == "mask":
        return mask_counts(element, height, width)
    raise Rejected(f"not a region: a CVAT <{tag}> has no area")


def parse_points(text) -> list:
    """'x0,y0;x1,y1;...' -> [x0, y0, x1, y1, ...]."""
    try:
        return [float(v) for pair in (text or "").split(";") if pair.strip() for v in pair.split(",")]
    except ValueError:
        raise Rejected(f"degenerate polygon: points {text[:40]!r}... are not numbers") from None


def mask_counts(element: ET.Element, height: int, width: int) -> tuple[str, list[str]]:
    """CVAT's mask RLE over its box -> full-image RLE counts; the box is checked before the runs are decoded."""
    left, top, box_w, box_h = mask_box(*(number(element, k) for k in ("left", "top", "width", "height")), height, width)
    crop = decode_rle(element.get("rle"), box_h, box_w)
    mask, clipped = paste(crop, left, top, height, width)
    return mask_to_counts(mask), ["clipped: mask reaches outside the image"] if clipped else []


def decode_rle(text, height: int, width: int) -> np.ndarray:
    """'b0, f0, b1, f1, ...' run lengths (background first, row-major) -> [height, width] bool."""
    try:
        runs = [int(v) for v in (text or "").split(",") if v.strip()]
    except ValueError:
        raise Rejected("bad RLE: the mask's rle is not a list of integers") from None
    if not runs or min(runs) < 0 or sum(runs) != height * width:
        raise Rejected(
            f"bad RLE: runs add up to {sum(runs)}, the mask box is {width}x{height} = {height * width} pixels"
        )
    values = np.arange(len(runs)) % 2 == 1  # odd runs are foreground
    return np.repeat(values, runs).reshape(height, width)


def number(element: ET.Element, key: str) -> float:
    try:
        return float(element.get(key))
    except (TypeError, ValueError):
        raise Rejected(f"bad attribute: <{element.tag}> {key}={element.get(key)!r} is not a number") from None


def provenance(element: ET.Element, image: ET.Element, index: int, meta: dict) -> dict:
    """CVAT's label, source (manual/auto/semi-auto), occluded, z_order, group, attributes and task meta."""
    extra = {
        "shape": element.tag,
        "original_id": f"{image.get('id')}/{index}",
        "image_original_id": image.get("id"),
        **meta,
    }
    extra.update({("cvat_source" if k == "source" else k): element.get(k) for k in SHAPE_KEYS if element.get(k)})
    attributes = {a.get("name"): a.text for a in element.findall("attribute")}
    if attributes:
        extra["attributes"] = attributes
    return extra
