"""Mask helpers: COCO run-length encoding on top of pycocotools, and the IoU of two dense masks."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(masks: np.ndarray) -> list[str]:
    """[N, H, W] bool masks -> COCO compressed RLE counts strings."""
    return encode_transposed(np.ascontiguousarray(np.asarray(masks, dtype=bool).transpose(0, 2, 1)))


def encode_transposed(masks: np.ndarray) -> list[str]:
    """[N, W, H] C-ordered bool masks, each stored transposed (COCO's column-major order) -> RLE counts.

    Reversing the axes of that array gives, without a copy, the [H, W, N] Fortran-ordered uint8 array that
    pycocotools reads; callers holding masks on a GPU transpose them there, where it costs nothing."""
    if len(masks) == 0:
        return []
    fortran = np.ascontiguousarray(masks, dtype=bool).view(np.uint8).transpose(2, 1, 0)
    return [r["counts"].decode("ascii") for r in mask_utils.encode(fortran)]


def to_rle(counts: str, height: int, width: int) -> dict:
    return {"size": [int(height), int(width)], "counts": counts.encode("ascii")}


def decode(counts: str, height: int, width: int) -> np.ndarray:
    """COCO compressed RLE counts string -> [H, W] bool mask."""
    return mask_utils.decode(to_rle(counts, height, width)).astype(bool)


# pycocotools 2.0.11's `area` overflows on more than 255 RLEs in one call: work in chunks.
AREA_CHUNK = 255


def area(counts: list[str], height: int, width: int) -> np.ndarray:
    rles = [to_rle(c, height, width) for c in counts]
    parts = [mask_utils.area(rles[i : i + AREA_CHUNK]) for i in range(0, len(rles), AREA_CHUNK)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def bbox(counts: list[str], height: int, width: int) -> np.ndarray:
    """XYWH boxes in COCO's convention (w = x_max - x_min + 1)."""
    if not counts:
        return np.zeros((0, 4), dtype=np.float64)
    return mask_utils.toBbox([to_rle(c, height, width) for c in counts])


def iou_matrix(a: list[str], b: list[str], height: int, width: int) -> np.ndarray:
    """[len(a), len(b)] mask IoU."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ra = [to_rle(c, height, width) for c in a]
    rb = [to_rle(c, height, width) for c in b]
    return np.asarray(mask_utils.iou(ra, rb, [0] * len(rb)))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two [H, W] bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
