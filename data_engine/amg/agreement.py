"""How far two generators' masks agree, in the figures torchao publishes for its fast SAM 2 generator:
mean IoU of matched masks, the share of images whose mask count differs, masks found by one side only."""

from __future__ import annotations

import numpy as np

from data_engine.io import rle
from data_engine.io.match import greedy_pairs


def agreement(images: list[tuple[list[str], list[str], int, int]], min_iou: float = 0.5) -> dict:
    """[(masks of A, masks of B, height, width)] per image -> {mean_matched_iou, count_differs,
    only_a, only_b, matched}: count_differs is the share of images whose mask counts differ; only_a and
    only_b count masks left unmatched (IoU < min_iou with every mask of the other side)."""
    ious, differs, only_a, only_b = [], 0, 0, 0
    for a, b, height, width in images:
        pairs = greedy_pairs(rle.iou_matrix(a, b, height, width), min_iou)  # best pairs first, one to one
        ious += [iou for _, _, iou in pairs]
        differs += len(a) != len(b)
        only_a += len(a) - len(pairs)
        only_b += len(b) - len(pairs)
    return {
        "mean_matched_iou": float(np.mean(ious)) if ious else float("nan"),
        "count_differs": differs / len(images) if images else float("nan"),
        "only_a": only_a,
        "only_b": only_b,
        "matched": len(ious),
    }
