"""Where each mask sits among its image's masks: whole objects, parts, subparts.

A mask's parent is the smallest other mask of its image that holds at least CONTAINMENT of its pixels;
its depth is 0 when no other mask holds it, else its parent's depth + 1. Of two masks that hold each
other (near-duplicates), the larger is the parent (at equal areas, the one listed first), so the parents
form a forest. Computed on the COCO RLE with pycocotools: no mask is decoded.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from data_engine.io import rle

CONTAINMENT = 0.9  # share of a mask's pixels its parent must hold


def containment(counts: list[str], height: int, width: int) -> np.ndarray:
    """[N, N]: the share of mask i's pixels that lie inside mask j (0 where mask i is empty)."""
    rles = [rle.to_rle(c, height, width) for c in counts]
    # pycocotools' IoU against a "crowd" mask is |a & b| / |a|: the share of a inside b
    share = np.asarray(mask_utils.iou(rles, rles, [1] * len(rles)), dtype=np.float64).reshape(len(rles), len(rles))
    return np.nan_to_num(share)


def parents(counts: list[str], areas, height: int, width: int, share: float = CONTAINMENT) -> tuple[list, list]:
    """One image's masks -> (parent index or None, depth) of each."""
    n = len(counts)
    if n == 0:
        return [], []
    area, index = np.asarray(areas, dtype=np.int64), np.arange(n)
    # j may hold i when it is larger (at equal areas: listed first), non-empty, and holds enough of i
    larger = (area[None, :] > area[:, None]) | ((area[None, :] == area[:, None]) & (index[None, :] < index[:, None]))
    holds = larger & (containment(counts, height, width) >= share) & (area[:, None] > 0)
    # The parent: the smallest such mask (at equal areas, the first listed)
    parent = np.where(holds.any(1), np.where(holds, area[None, :], np.iinfo(np.int64).max).argmin(1), -1)
    # Depths from the largest masks down: a parent comes before its children in this order
    depth = np.zeros(n, dtype=np.int64)
    for i in np.lexsort((index, -area)):
        depth[i] = 0 if parent[i] < 0 else depth[parent[i]] + 1
    return [None if p < 0 else int(p) for p in parent], depth.tolist()


def with_hierarchy(masks: list[dict], share: float = CONTAINMENT) -> list[dict]:
    """Set `parent_mask_id` and `depth` of every mask row (rows with mask_id, image_id, segmentation, area,
    height, width), image by image."""
    by_image: dict = {}
    for row in masks:
        by_image.setdefault(row["image_id"], []).append(row)
    for rows in by_image.values():
        first = rows[0]
        found, depths = parents(
            [r["segmentation"] for r in rows], [r["area"] for r in rows], first["height"], first["width"], share
        )
        for row, parent, depth in zip(rows, found, depths):
            row["parent_mask_id"] = None if parent is None else rows[parent]["mask_id"]
            row["depth"] = depth
    return masks
