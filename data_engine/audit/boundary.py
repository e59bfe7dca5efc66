"""Boundary IoU (Cheng et al. 2021): IoU of the bands within d pixels inside each mask's contour."""

from __future__ import annotations

import math

import cv2
import numpy as np


def band_width(height: int, width: int, ratio: float = 0.02) -> int:
    """d = round(ratio x image diagonal), at least 1 pixel."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def inner_band(mask: np.ndarray, d: int) -> np.ndarray:
    """Pixels of `mask` within d px of the background: mask minus its erosion (3x3 kernel, d times).

    Outside the image counts as background, so a mask touching the image edge has a band there.
    Eroding d times with a 3x3 square equals one erosion with a (2d+1) square.
    """
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    eroded = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask.astype(bool) & ~eroded.astype(bool)


def boundary_iou(a: np.ndarray, b: np.ndarray, d: int) -> float:
    """Boundary IoU of two [H, W] masks with band width d; 1.0 when both are empty."""
    a, b = crop_to_union(a.astype(bool), b.astype(bool), d)
    band_a, band_b = inner_band(a, d), inner_band(b, d)
    union = np.logical_or(band_a, band_b).sum()
    return float(np.logical_and(band_a, band_b).sum() / union) if union else 1.0


def crop_to_union(a: np.ndarray, b: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their joint box grown by d + 1 px (same result, less work).

    Inside the image the cut-off pixels are background in both masks; outside it, the erosion's
    border is background too, so the bands do not change.
    """
    ys, xs = np.nonzero(a | b)
    if len(ys) == 0:
        return a, b
    h, w = a.shape
    y0, y1 = max(0, ys.min() - d - 1), min(h, ys.max() + d + 2)
    x0, x1 = max(0, xs.min() - d - 1), min(w, xs.max() + d + 2)
    return a[y0:y1, x0:x1], b[y0:y1, x0:x1]
