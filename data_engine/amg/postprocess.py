"""Per-mask steps of the fully-automatic stage that are not model calls."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score, remove_small_regions

from data_engine.io import rle


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


def cleaning_window(y0: int, y1: int, x0: int, x1: int, shape, min_area: int) -> tuple[int, int, int, int]:
    """A mask's box [y0, y1) x [x0, x1) widened by margins within the image, so that small regions found in
    the window are those of the whole image.

    Foreground lies inside the box, so islands are the same. A background region is a hole only if it
    does not reach past the window; the margins are wide enough that a region reaching a window side
    holds that side's whole background strip (at least the box's extent times the margin, >= min_area
    px), so it is not filled in the window either, as in the full image. Sides at the image edge need
    no margin."""
    margin_y, margin_x = -(-min_area // (x1 - x0)), -(-min_area // (y1 - y0))  # ceil, >= 1
    return max(0, y0 - margin_y), min(shape[0], y1 + margin_y), max(0, x0 - margin_x), min(shape[1], x1 + margin_x)


def clean_small_regions_rle(
    counts: str, height: int, width: int, min_area: int, keep_largest: bool
) -> tuple[str | None, bool, list[int]]:
    """clean_small_regions of an RLE mask at the cost of its box, not of the image: only the columns of its
    cleaning_window are decoded and, when changed, re-encoded (the rest of the mask stays runs).

    Returns (counts or None when the mask is removed, changed, XYXY box max-inclusive). An empty mask is
    left to the full image (there the whole image decides)."""
    x, y, w, h = (int(v) for v in rle.bbox([counts], height, width)[0])
    if w == 0:  # empty: the whole image decides
        mask, changed = clean_small_regions(rle.decode(counts, height, width), min_area, keep_largest)
        return (None, True, []) if mask is None else (rle.encode(mask[None])[0], changed, box_of(mask))
    y0, y1, x0, x1 = cleaning_window(y, y + h, x, x + w, (height, width), min_area)
    columns = rle.decode_columns(counts, height, width, x0, x1)
    window, changed = clean_small_regions(columns[y0:y1], min_area, keep_largest)
    if window is None:
        return None, True, []
    if not changed:
        return counts, False, [x, y, x + w - 1, y + h - 1]
    columns[y0:y1] = window
    bx0, by0, bx1, by1 = box_of(window)
    return rle.replace_columns(counts, height, width, x0, columns), True, [bx0 + x0, by0 + y0, bx1 + x0, by1 + y0]


def box_of(mask: np.ndarray) -> list[int]:
    """XYXY box of a [H, W] mask, max inclusive, [0, 0, 0, 0] when empty (as batched_mask_to_box)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])] if len(rows) else [0, 0, 0, 0]


def support_windows(low_res: torch.Tensor, threshold: float, encoder_side: int, input_size, crop_size) -> torch.Tensor:
    """[N, h, w] low-res logits (the decoder's, covering the padded [encoder_side]^2 input) -> [N, 4] windows
    (y0, y1, x0, x1; ends exclusive) of the masks at crop resolution (Sam.postprocess_masks to crop_size): no
    pixel outside a mask's window is above `threshold`. A mask with no pixel above it gets an empty window.

    Bilinear resizing (align_corners=False, no antialias) makes each output pixel a convex combination of at
    most 2x2 neighbouring inputs, so a pixel above the threshold has an input neighbour above it, up to
    rounding; low-res pixels are taken from slightly below the threshold to cover that rounding. Each of
    SAM's two resizes (to the encoder's square input, then, padding removed, to the crop) widens the window
    by the reach of one input pixel.
    """
    slack = 1e-4 * (1.0 + low_res.abs().flatten(1).amax(1))  # far above float32 rounding at this magnitude
    above = low_res > (threshold - slack)[:, None, None]
    windows = []
    for dim, low_size, in_size, out_size in (
        (2, low_res.shape[1], input_size[0], crop_size[0]),
        (1, low_res.shape[2], input_size[1], crop_size[1]),
    ):
        hits = above.any(dim)  # [N, low_size]: rows (or columns) with a pixel above
        index = torch.arange(low_size, device=low_res.device)
        first = torch.where(hits, index, low_size).amin(1)
        last = torch.where(hits, index, -1).amax(1)
        first, last = resized_span(first, last, low_size, encoder_side)
        first, last = resized_span(first, torch.clamp(last, max=in_size - 1), in_size, out_size)
        empty = ~hits.any(1)
        windows += [torch.where(empty, 0, first), torch.where(empty, 0, last + 1)]
    return torch.stack(windows, 1)


def resized_span(first: torch.Tensor, last: torch.Tensor, in_size: int, out_size: int):
    """Output indices (first, last; inclusive) that bilinear resizing from in_size to out_size computes from
    input indices first..last. Output p reads inputs floor(s) and floor(s) + 1, s = (p + 0.5) * in / out - 0.5,
    so p depends on input q when q - 1 <= s < q + 1; one more pixel each side covers the rounding of the scale."""
    ratio = out_size / in_size
    first = torch.floor((first - 0.5) * ratio - 0.5).long() - 1
    last = torch.ceil((last + 1.5) * ratio - 0.5).long() + 1
    return first.clamp(0, out_size - 1), last.clamp(0, out_size - 1)


def window_filters(logits: torch.Tensor, windows: torch.Tensor, low: float, high: float, threshold: float):
    """Stability score, box and area of [N, H, W] mask logits, reading only each mask's window (see
    support_windows; masks sharing a window are computed together).

    Returns stability [N] (as stability_score), boxes [N, 4] XYXY int64 (as batched_mask_to_box), areas [N]
    and masks: per mask its window's [h, w] bool mask (logits > threshold).
    """
    n, device = len(logits), logits.device
    inter, union = torch.zeros(n, dtype=torch.int32, device=device), torch.zeros(n, dtype=torch.int32, device=device)
    boxes, areas = torch.zeros(n, 4, dtype=torch.long, device=device), torch.zeros(n, dtype=torch.long, device=device)
    masks = [None] * n
    unique, group = torch.unique(windows, dim=0, return_inverse=True)
    for g, (y0, y1, x0, x1) in enumerate(unique.tolist()):
        rows = torch.nonzero(group == g)[:, 0]
        part = logits[rows, y0:y1, x0:x1]
        inter[rows] = count(part > high)
        union[rows] = count(part > low)
        mask = part > threshold
        areas[rows] = area = mask.flatten(1).sum(1)
        if mask.numel():  # boxes in the logits' frame; an empty mask keeps [0, 0, 0, 0]
            offset = torch.tensor([x0, y0, x0, y0], device=device)
            boxes[rows] = torch.where(area[:, None] > 0, batched_mask_to_box(mask) + offset, 0)
        for i, r in enumerate(rows.tolist()):
            masks[r] = mask[i]
    return inter / union, boxes, areas, masks


def count(masks: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool -> [N] int32 pixel counts (as segment_anything's stability score counts)."""
    return masks.flatten(1).sum(1, dtype=torch.int32)
