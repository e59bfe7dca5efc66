"""Per-mask steps of the fully-automatic stage that are not model calls."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from segment_anything.utils.amg import calculate_stability_score, remove_small_regions


def stability_thresholds(mask_threshold: float, levels, offset) -> tuple[float, float]:
    """(low, high) logit thresholds: from SAM's offset when given, else from probability levels."""
    if offset is not None:
        return mask_threshold - offset, mask_threshold + offset
    low, high = (math.log(p / (1.0 - p)) for p in levels)
    return low, high


def stability_score(logits: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """IoU between the masks thresholded at `high` and at `low` (the high one lies inside the low one)."""
    return calculate_stability_score(logits, (low + high) / 2, (high - low) / 2)


def clean_small_regions(mask: np.ndarray, min_area: int, keep_largest: bool) -> tuple[np.ndarray | None, bool]:
    """Fill holes and remove islands under `min_area` px.

    Returns (mask or None when the whole mask is removed, changed). With `keep_largest` a mask made
    only of small islands keeps its largest one (the released code); without, it is removed (SA-1B).
    """
    mask, filled = remove_small_regions(mask, min_area, mode="holes")
    if not keep_largest and largest_component(mask) < min_area:
        return None, True
    mask, trimmed = remove_small_regions(mask, min_area, mode="islands")
    return mask, filled or trimmed


def largest_component(mask: np.ndarray) -> int:
    """Pixel count of the largest 8-connected foreground component."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0


def clean_small_regions_in_box(mask: np.ndarray, min_area: int, keep_largest: bool) -> tuple[np.ndarray | None, bool]:
    """clean_small_regions of a full-image mask, computed inside its bounding box with a margin: the same
    result at the cost of the box, not of the image.

    Foreground lies inside the box, so islands are the same. A background region is a hole only if it
    does not reach past the window; the margins are wide enough that a region reaching a window side
    holds that side's whole background strip (at least the box's extent times the margin, >= min_area
    px), so it is not filled in the window either, as in the full image. Sides at the image edge need
    no margin. An empty mask is left to the full-image function (there the whole image decides).
    """
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return clean_small_regions(mask, min_area, keep_largest)
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    margin_y, margin_x = -(-min_area // (x1 - x0)), -(-min_area // (y1 - y0))  # ceil, >= 1
    y0, x0 = max(0, y0 - margin_y), max(0, x0 - margin_x)
    y1, x1 = min(mask.shape[0], y1 + margin_y), min(mask.shape[1], x1 + margin_x)
    window, changed = clean_small_regions(mask[y0:y1, x0:x1], min_area, keep_largest)
    if window is None or not changed:
        return (None if window is None else mask), changed
    out = mask.copy()
    out[y0:y1, x0:x1] = window
    return out, True
