"""Mask helpers: COCO run-length encoding on top of pycocotools, and the IoU of two dense masks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils

if TYPE_CHECKING:
    import torch


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


def encode_transposed_runs(masks: torch.Tensor) -> list[str]:
    """encode_transposed of a [N, W, H] bool tensor on any device: the runs are found where the masks are
    (a GPU) and only where they change is copied to the host, not the pixels; pycocotools compresses them."""
    import torch  # here, so that reading and writing RLE never loads torch

    n, w, h = masks.shape
    if n == 0:
        return []
    flat = masks.reshape(n, w * h)
    # (mask, position) of every pixel that differs from the one before it: a run ends there
    changes = torch.nonzero(flat[:, 1:] != flat[:, :-1]).cpu().numpy()
    return counts_from_changes(changes, flat[:, 0].cpu().numpy(), h, w)


def counts_from_changes(changes: np.ndarray, first: np.ndarray, height: int, width: int) -> list[str]:
    """The host side of encode_transposed_runs: [K, 2] (mask, position) where a run ends (positions in
    the flattened transposed mask, minus one) and each mask's first pixel -> RLE counts."""
    n, h, w = len(first), height, width
    runs = []
    for i, ends in enumerate(np.split(changes[:, 1] + 1, np.searchsorted(changes[:, 0], np.arange(1, n)))):
        counts = np.diff(np.concatenate([[0], ends, [w * h]]))
        # COCO runs start with background: a mask whose first pixel is set begins with an empty run
        runs.append({"counts": ([0] if first[i] else []) + counts.tolist(), "size": [h, w]})
    return [r["counts"].decode("ascii") for r in mask_utils.frPyObjects(runs, h, w)]


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


def parse_counts(counts: str) -> np.ndarray | None:
    """COCO compressed RLE counts string -> run lengths (int64), or None when malformed.

    Each value is a little-endian base-32 number of characters 48+(0..63): bit 0x20 continues it, the
    last character's bit 0x10 is the sign; from the third value on, each is a difference to the value
    two places before it."""
    chars = np.frombuffer(counts.encode("ascii", "replace"), np.uint8).astype(np.int64) - 48
    if chars.size == 0 or chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20:
        return None
    ends = np.flatnonzero((chars & 0x20) == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if (ends - starts).max() >= 7:  # values fit in 7 characters (35 bits): longer ones are crafted
        return None
    place = np.arange(chars.size) - np.repeat(starts, ends - starts + 1)
    values = np.add.reduceat((chars & 0x1F) << (5 * place), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= 1 << (5 * (ends[negative] - starts[negative] + 1))
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def runs_of(counts: str, height: int, width: int) -> np.ndarray:
    """Run lengths of a well-formed RLE (background first), as int64."""
    runs = parse_counts(counts)
    if runs is None or runs.sum() != height * width:
        raise ValueError("malformed RLE counts")
    return runs


def decode_columns(counts: str, height: int, width: int, x0: int, x1: int) -> np.ndarray:
    """Columns x0..x1-1 of a mask, [H, x1 - x0] bool, decoding only those columns: COCO's order is column
    by column, so they are one stretch of the runs."""
    runs = runs_of(counts, height, width)
    ends = np.cumsum(runs)
    lo, hi = x0 * height, x1 * height
    # the runs that overlap [lo, hi), clipped to it; odd-numbered runs are foreground
    first, last = np.searchsorted(ends, lo, "right"), np.searchsorted(ends, hi, "left")
    idx = np.arange(first, min(last + 1, len(runs)))
    starts = np.maximum(ends[idx] - runs[idx], lo)
    lengths = np.minimum(ends[idx], hi) - starts
    flat = np.repeat((idx % 2).astype(bool), lengths)
    return flat.reshape(x1 - x0, height).T


def replace_columns(counts: str, height: int, width: int, x0: int, columns: np.ndarray) -> str:
    """The RLE with columns x0..x0+K-1 replaced by `columns` ([H, K] bool); the rest of the mask is kept
    as runs, never decoded."""
    runs = runs_of(counts, height, width)
    ends = np.cumsum(runs)
    lo, hi = x0 * height, (x0 + columns.shape[1]) * height
    values = np.arange(len(runs)) % 2
    # before: the runs up to lo, clipped; after: from hi on, clipped
    before = np.minimum(ends, lo) - np.minimum(ends - runs, lo)
    after = np.maximum(ends, hi) - np.maximum(ends - runs, hi)
    flat = np.ascontiguousarray(columns.T).reshape(-1)
    cut = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    window_lengths = np.diff(np.concatenate([[0], cut, [flat.size]]))
    window_values = flat[np.concatenate([[0], cut])].astype(np.int64) if flat.size else np.zeros(0, np.int64)
    lengths = np.concatenate([before, window_lengths, after])
    kinds = np.concatenate([values, window_values, values])
    lengths, kinds = lengths[lengths > 0], kinds[lengths > 0]
    # merge neighbours of one value, then start with a (possibly empty) background run
    starts = np.concatenate([[True], kinds[1:] != kinds[:-1]]) if kinds.size else np.zeros(0, bool)
    merged = np.add.reduceat(lengths, np.flatnonzero(starts)) if kinds.size else np.zeros(0, np.int64)
    if kinds.size and kinds[0] == 1:
        merged = np.concatenate([[0], merged])
    rle = mask_utils.frPyObjects({"counts": merged.tolist(), "size": [height, width]}, height, width)
    return rle["counts"].decode("ascii")
