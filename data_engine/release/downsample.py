"""Bring an image and its masks to the released resolution: shortest side at most `shortest_side`.

Image and masks go through the same area resize, so a released mask covers the released pixels its
object covers: each mask is resized as a coverage map (the share of every released pixel that the
original mask covers) and kept where that share is at least one half.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_engine.io import rle


def released_size(height: int, width: int, shortest_side: int) -> tuple[int, int]:
    """(h, w) of the released image: shortest side brought down to `shortest_side`, aspect kept; never upscaled."""
    short = min(height, width)
    if short <= shortest_side:
        return height, width
    scale = shortest_side / short
    if height <= width:
        return shortest_side, max(1, round(width * scale))
    return max(1, round(height * scale)), shortest_side


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 -> [h, w, 3] uint8 by area interpolation (unchanged when the size is)."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_mask(counts: str, height: int, width: int, size: tuple[int, int]) -> str:
    """COCO RLE counts of an [H, W] mask -> counts of the [h, w] mask aligned with `resize_image`'s pixels."""
    if (height, width) == tuple(size):
        return counts
    # Area-resize the 0/255 mask: each released pixel gets its covered share (rounded to 1/255)
    mask = np.ascontiguousarray(rle.decode(counts, height, width), dtype=np.uint8) * np.uint8(255)
    coverage = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    # Keep pixels at least half covered
    return rle.encode(coverage[None] >= 128)[0]


def scale_box(box, sx: float, sy: float) -> list[float] | None:
    """XYWH box on the pixel-edge grid scaled by (sx, sy), corners rounded to whole pixels (crop boxes)."""
    if box is None:
        return None
    x0, y0 = round(box[0] * sx), round(box[1] * sy)
    x1, y1 = round((box[0] + box[2]) * sx), round((box[1] + box[3]) * sy)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def scale_points(points, sx: float, sy: float) -> list[list[float]] | None:
    """[[x, y], ...] continuous image coordinates (pixel edges at integers) scaled by (sx, sy)."""
    if points is None:
        return None
    return [[round(x * sx, 3), round(y * sy, 3)] for x, y in points]
