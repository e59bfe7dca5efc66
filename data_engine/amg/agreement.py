"""How far two generators' masks agree, in the figures torchao publishes for its fast SAM 2 generator:
mean IoU of matched masks, the share of images whose mask count differs, masks found by one side only."""

from __future__ import annotations

import numpy as np

from data_engine.io import rle


def match(a: list[str], b: list[str], height: int, width: int, min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one greedy matching of two images' masks (RLE counts), highest IoU first: (i, j, IoU)
    for every pair with IoU >= min_iou."""
    iou = rle.iou_matrix(a, b, height, width)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j, float(iou[i, j])))
    return pairs


def agreement(images: list[tuple[list[str], list[str], int, int]], min_iou: float = 0.5) -> dict:
    """[(masks of A, masks of B, height, width)] per image -> {mean_matched_iou, count_differs,
    only_a, only_b, matched}: count_differs is the share of images whose mask counts differ; only_a and
    only_b count masks left unmatched (IoU < min_iou with every mask of the other side)."""
    ious, differs, only_a, only_b = [], 0, 0, 0
    for a, b, height, width in images:
        pairs = match(a, b, height, width, min_iou)
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
