"""Checks every importer shares: file names, image sizes, polygons, RLE, duplicates.

A failed check raises `Rejected`; its message becomes the report's reason. Reasons read
"<kind>: <details>" so the stage can count them by kind.
"""

from __future__ import annotations

import math
import posixpath
import re
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from data_engine.io import images, rle
from data_engine.io.inputs import FOLLOW, InputError, leaves_root, read_json

WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:/")
FRAME_MARGIN = 10  # polygons are clipped to the image grown by this many times its size on each side
OUTLINE_LIMIT = 1 << 21  # pixels of polygon outline one annotation may rasterise (about 40 bytes each)


class Rejected(Exception):
    """An annotation that cannot be imported; str(err) is the reason written to the report."""


# File names


def safe_name(name) -> str:
    """A file name relative to the image root, with '/' separators; absolute or escaping names rejected."""
    if not isinstance(name, str) or not name.strip():
        raise Rejected(f"bad file name: {name!r} is not a file name")
    text = name.strip().replace("\\", "/")
    if text.startswith("/") or WINDOWS_DRIVE.match(text):
        raise Rejected(f"path escapes image root: {name!r} is absolute; give names relative to the image root")
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise Rejected(f"path escapes image root: {name!r} points outside the image root")
    return norm


def or_none(find, *args):
    """find(*args), or None where it rejects: a name to show in a report row rejected for another reason."""
    try:
        return find(*args)
    except Rejected:
        return None


def relative_to_root(path: Path, root: Path, shown: str) -> str:
    """`path` (already joined, e.g. a LabelMe imagePath resolved against its JSON) as a name under `root`."""
    resolved = Path(posixpath.normpath(str(path).replace("\\", "/")))
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        raise Rejected(
            f"path escapes image root: {shown!r} lies outside {root}; pass image_root= a folder that holds every image"
        ) from None


# Image sizes


class ImageSizes:
    """Sizes of the images under `root` (read from headers, cached); None root: declared sizes are trusted.

    No image or mask above `max_pixels` (default: Pillow's decompression-bomb limit) is imported, nor, unless
    `follow_symlinks`, an image that is a symlink leaving the root (io.inputs.leaves_root)."""

    def __init__(self, root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False):
        self.root = root
        self.max_pixels = max_pixels or Image.MAX_IMAGE_PIXELS
        self.follow_symlinks = follow_symlinks
        self.cache: dict[str, tuple] = {}

    def check(self, name: str, declared: tuple[int, int] | None) -> tuple[int, int]:
        """(height, width) of image `name`: the file's size after EXIF orientation when a root is known."""
        if declared is not None:
            declared = check_declared(declared)
        if self.root is None:
            if declared is None:
                raise Rejected(f"unknown image size: {name} declares no size and no image_root was given")
            return self.check_pixels(name, declared)
        size, raw = self.read(name)
        if declared is not None and declared != size:
            raise Rejected(size_mismatch(declared, size, raw))
        return self.check_pixels(name, size)

    def check_pixels(self, name: str, size: tuple[int, int]) -> tuple[int, int]:
        """`size`, or a rejection when an image of that size is above the pixel limit."""
        if size[0] * size[1] > self.max_pixels:
            raise Rejected(
                f"image too large: {name} is {size[1]}x{size[0]} = {size[0] * size[1]} pixels, above the "
                f"limit of {self.max_pixels} (input.max_pixels)"
            )
        return size

    def read(self, name: str) -> tuple[tuple[int, int], tuple[int, int]]:
        if name not in self.cache:
            self.cache[name] = oriented_size(self.root / name, name, self.root, self.follow_symlinks)
        found = self.cache[name]
        if isinstance(found, str):
            raise Rejected(found)
        return found


def check_declared(declared) -> tuple[int, int]:
    h, w = declared
    if not all(is_count(v) and v > 0 for v in (h, w)):
        raise Rejected(f"bad image size: height and width must be positive integers, got {h!r} x {w!r}")
    return int(h), int(w)


def is_count(value) -> bool:
    """An integer (or a float holding one) that fits a float: JSON's 1e999 and 10**400 are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < 2**53 and float(value) == int(value)


def oriented_size(path: Path, name: str, root: Path, follow_symlinks: bool):
    """((h, w) as the pipeline loads it, (h, w) as stored), or the reason the image cannot be used."""
    if not follow_symlinks and leaves_root(path, root):
        return f"symlink leaves image root: {name} is a symlink to a path outside the image root ({FOLLOW})"
    if not path.is_file():
        return f"unknown image: {name} not found under the image root"
    try:
        return images.image_size(path)
    except images.ImageError as err:
        return f"unreadable image: {name} ({err})"


def size_mismatch(declared, size, raw) -> str:
    text = f"size mismatch: annotation says {declared[1]}x{declared[0]}, image is {size[1]}x{size[0]}"
    if raw != size:
        text += f" after EXIF orientation (stored {raw[1]}x{raw[0]})"
    return text


# Polygons


def polygons_to_counts(polygons, height: int, width: int) -> tuple[str, list[str]]:
    """COCO polygons [[x0, y0, x1, y1, ...], ...] -> (RLE counts, notes). Rasterised by pycocotools.

    Degenerate rings (under 3 points, odd or non-finite coordinates, zero area) are dropped and
    noted; none left is a rejection. Parts outside the image are clipped by the rasterisation, after
    rings reaching far outside are cut to a frame around the image (the rasteriser's memory grows
    with the outline's length, and coordinates beyond its integer range crash it).
    """
    if not isinstance(polygons, list) or not polygons:
        raise Rejected("degenerate polygon: empty polygon list")
    rings, problems = [], []
    for ring in polygons:
        coords, problem = check_ring(ring)
        if problem:
            problems.append(problem)
        else:
            rings.append(coords)
    if not rings:
        raise Rejected(f"degenerate polygon: {problems[0]}")
    notes = [f"degenerate part dropped: {len(problems)} polygon part(s), first: {problems[0]}"] if problems else []
    clipped = any(outside(ring, height, width) for ring in rings)
    if clipped:
        notes.append("clipped: polygon reaches outside the image")
    rings = [ring for ring in (clip_to_frame(ring, height, width) for ring in rings) if ring is not None]
    if not rings:
        raise Rejected("outside image: polygon lies outside the image")
    check_outline(rings)
    merged = mask_utils.merge(mask_utils.frPyObjects([ring.tolist() for ring in rings], height, width))
    counts = merged["counts"].decode("ascii")
    if rle.area([counts], height, width)[0] == 0:
        raise Rejected(
            "outside image: polygon lies outside the image" if clipped else "empty mask: polygon covers no pixel"
        )
    return counts, notes


def check_ring(ring) -> tuple[list | None, str | None]:
    """(coordinates as floats, None), or (None, why this polygon ring cannot be rasterised)."""
    if not isinstance(ring, (list, tuple)):
        return None, f"a polygon part is {type(ring).__name__}, not a coordinate list"
    try:
        xy = np.asarray(ring, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None, "non-numeric coordinates"
    if xy.ndim != 1 or not np.isfinite(xy).all():
        return None, "non-numeric or non-finite coordinates"
    if len(xy) % 2:
        return None, f"odd number of coordinates ({len(xy)})"
    if len(xy) < 6:
        return None, f"{len(xy) // 2} point(s), a polygon needs 3"
    if shoelace_area(xy[0::2], xy[1::2]) == 0:
        return None, "zero area (all points on one line)"
    return xy, None


def shoelace_area(x: np.ndarray, y: np.ndarray) -> float:
    return abs(float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])) / 2


def clip_to_frame(ring: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """The flat ring cut to the frame around the image (None when nothing of it is left); a ring inside
    the frame is returned unchanged. Cutting keeps the region inside the frame, so the mask is the same."""
    low = -FRAME_MARGIN * np.array([width, height], dtype=np.float64)
    high = (1 + FRAME_MARGIN) * np.array([width, height], dtype=np.float64)
    points = ring.reshape(-1, 2)  # [N, 2] x, y
    if ((points >= low) & (points <= high)).all():
        return ring
    for axis in (0, 1):
        points = clip_half_plane(points, axis, low[axis], keep_above=True)
        points = clip_half_plane(points, axis, high[axis], keep_above=False)
    return points.ravel() if len(points) >= 3 and shoelace_area(points[:, 0], points[:, 1]) > 0 else None


def clip_half_plane(points: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    """One Sutherland-Hodgman step: the closed ring `points` [N, 2] cut to one side of a frame line."""
    if len(points) == 0:
        return points
    inside = points[:, axis] >= bound if keep_above else points[:, axis] <= bound
    prev, prev_inside = np.roll(points, 1, axis=0), np.roll(inside, 1)
    # Where the edge from the previous point crosses the line
    step = points[:, axis] - prev[:, axis]
    t = np.divide(bound - prev[:, axis], step, out=np.zeros_like(step), where=step != 0)
    crossing = prev + t[:, None] * (points - prev)
    crossing[:, axis] = bound
    # Each edge gives its crossing (when it crosses) then its end point (when inside)
    candidates = np.stack([crossing, points], axis=1)  # [N, 2, 2]
    keep = np.stack([inside != prev_inside, inside], axis=1)  # [N, 2]
    return candidates[keep]


def check_outline(rings: list[np.ndarray]) -> None:
    """Refuse rings whose outline (in the rasteriser's steps, the longer side of each edge) is too long."""
    length = 0.0
    for ring in rings:
        points = ring.reshape(-1, 2)
        length += float(np.abs(points - np.roll(points, 1, axis=0)).max(axis=1).sum())
    if length > OUTLINE_LIMIT:
        raise Rejected(
            f"bad polygon: its outline is {length:.0f} pixels long, above the {OUTLINE_LIMIT} pixels one "
            "annotation may rasterise"
        )


def outside(ring, height: int, width: int) -> bool:
    x, y = np.asarray(ring[0::2]), np.asarray(ring[1::2])
    return bool((x < 0).any() or (y < 0).any() or (x > width).any() or (y > height).any())


def points_to_flat(points) -> list:
    """[[x, y], ...] (LabelMe, Label Studio, click files) -> [x0, y0, x1, y1, ...]."""
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
        raise Rejected("degenerate polygon: points must be a list of [x, y] pairs")
    return [v for p in points for v in p]


# RLE and binary masks


def rle_to_counts(segmentation: dict, height: int, width: int) -> str:
    """COCO RLE (compressed counts string, or uncompressed counts list) -> compressed counts string."""
    size = segmentation.get("size")
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(is_count(v) for v in size):
        raise Rejected(f"bad RLE: size {str(size)[:40]} is not [height, width]")
    if [int(v) for v in size] != [height, width]:
        raise Rejected(f"size mismatch: RLE size {size} differs from the image size {[height, width]}")
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        return uncompressed_counts(counts, height, width)
    if isinstance(counts, (str, bytes)):
        return compressed_counts(counts, height, width)
    raise Rejected(f"bad RLE: counts is {type(counts).__name__}, expected a string or a list")


def uncompressed_counts(counts: list, height: int, width: int) -> str:
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise Rejected("bad RLE: counts must be non-negative integers")
    if sum(counts) != height * width:
        raise Rejected(f"bad RLE: counts add up to {sum(counts)}, the image has {height * width} pixels")
    encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return encoded["counts"].decode("ascii")


def compressed_counts(counts, height: int, width: int) -> str:
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    runs = rle.parse_counts(text)
    if runs is None or (runs < 0).any():
        raise Rejected("bad RLE: compressed counts string is corrupt")
    if int(runs.sum()) != height * width:
        raise Rejected(f"bad RLE: counts add up to {int(runs.sum())}, the image has {height * width} pixels")
    return text


def read_mask(
    source, size, max_pixels: int, decode, kinds=("unreadable mask", "size mismatch", "image too large")
) -> np.ndarray:
    """decode(image) of a mask image file (a path or a file object), refused from its header, before any
    pixel is decoded, unless it is `size` (h, w) or, with no size to match, at most `max_pixels`.
    `kinds`: the reasons' kinds for data that does not decode, another size, too many pixels."""
    unreadable, mismatch, too_large = kinds
    try:
        img = images.open_image(source)
    except images.ImageError as err:
        raise Rejected(f"{unreadable}: {err}") from None
    with img:
        w, h = img.size
        if size is not None and (h, w) != tuple(size):
            raise Rejected(f"{mismatch}: the mask is {w}x{h}, it should be {size[1]}x{size[0]}")
        if w * h > max_pixels:
            raise Rejected(f"{too_large}: the mask is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
        try:
            return decode(img)
        except Exception as err:  # PIL raises several types for corrupt data
            raise Rejected(f"{unreadable}: {type(err).__name__}: {err}") from None


def mask_box(left, top, box_w, box_h, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, box width, box height) of a mask stored over a box (CVAT, LabelMe) as integers, checked
    before its data is decoded: finite numbers, and no more pixels than the image holds."""
    box = [int(v) if is_finite(v) else None for v in (left, top, box_w, box_h)]
    if None in box:
        raise Rejected(f"bad mask: its box {[left, top, box_w, box_h]} is not in pixels")
    left, top, box_w, box_h = box
    if box_w <= 0 or box_h <= 0:
        raise Rejected(f"bad mask: its box is {box_w}x{box_h} pixels")
    if box_w * box_h > height * width:
        raise Rejected(f"bad mask: its box of {box_w}x{box_h} pixels is larger than the {width}x{height} image")
    return left, top, box_w, box_h


def is_finite(value) -> bool:
    """A real number a float can hold (not bool, inf, nan or an integer beyond float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < 2**53 if isinstance(value, int) else math.isfinite(value)


def mask_to_counts(mask: np.ndarray) -> str:
    """[H, W] bool mask -> compressed RLE counts."""
    return rle.encode(np.asarray(mask, dtype=bool)[None])[0]


def paste(crop: np.ndarray, left: int, top: int, height: int, width: int) -> tuple[np.ndarray, bool]:
    """A [h, w] crop placed at (left, top) in an empty [height, width] mask; True when some of it was cut off."""
    ch, cw = crop.shape
    y0, y1, x0, x1 = max(top, 0), min(top + ch, height), max(left, 0), min(left + cw, width)
    mask = np.zeros((height, width), dtype=bool)
    if y0 < y1 and x0 < x1:
        mask[y0:y1, x0:x1] = crop[y0 - top : y1 - top, x0 - left : x1 - left]
    return mask, int(mask.sum()) < int(np.count_nonzero(crop))


# Duplicates


class Seen:
    """Ids met so far in one file: a second use of an id is rejected."""

    def __init__(self, what: str):
        self.what, self.first = what, {}

    def check(self, key, where) -> None:
        if key is None:
            return
        marker = repr(key) if not isinstance(key, (int, str)) else str(key)
        if marker in self.first:
            raise Rejected(f"duplicate id: {self.what} {marker} appears again (first at {self.first[marker]})")
        self.first[marker] = where


def read_json_file(path: Path, fmt: str, expects: str):
    """Parse one exported JSON file; a folder or unreadable JSON is an InputError naming the format."""
    if path.is_dir():
        raise InputError(f"{path} is a folder: the {fmt} format takes {expects}")
    return read_json(path, f"{fmt} export")
