"""One-to-one matching: optimal against brute force, threshold, and IoU of known rectangles."""

import itertools

import numpy as np
import pytest
from maskdata import rect

from data_engine.audit.match import assign_max, hungarian_max, match, overlap_groups
from data_engine.io import rle


def brute_force_best(weights: np.ndarray) -> float:
    """Largest summed weight over every one-to-one assignment (small matrices only)."""
    n, m = weights.shape
    if n > m:
        return brute_force_best(weights.T)
    return max(sum(weights[i, cols[i]] for i in range(n)) for cols in itertools.permutations(range(m), n))


@pytest.mark.parametrize("seed", range(40))
def test_assignment_is_optimal(seed):
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(1, 6, 2))
    weights = rng.random((n, m)) * (rng.random((n, m)) > 0.5)  # sparse, like mask overlaps
    pairs = assign_max(weights)
    assert len({r for r, _ in pairs}) == len(pairs) == len({c for _, c in pairs})  # one-to-one
    assert sum(weights[r, c] for r, c in pairs) == pytest.approx(brute_force_best(weights))
    assert all(weights[r, c] > 0 for r, c in pairs)  # no pair without overlap


def test_maximises_total_not_greedy():
    # Greedy takes (0, 0) = 0.9 and leaves row 1 alone; the best total pairs (0, 1) and (1, 0).
    weights = np.array([[0.9, 0.8], [0.85, 0.0]])
    assert assign_max(weights) == [(0, 1), (1, 0)]
    assert sorted(hungarian_max(weights)) == [(0, 1), (1, 0)]


def test_min_iou_drops_weak_pairs():
    weights = np.array([[0.95, 0.0], [0.0, 0.3]])
    assert assign_max(weights) == [(0, 0), (1, 1)]
    assert assign_max(weights, min_iou=0.5) == [(0, 0)]


def test_overlap_groups_split_independent_masks():
    weights = np.zeros((3, 3))
    weights[0, 0] = weights[1, 0] = weights[2, 2] = 0.5
    groups = sorted((r.tolist(), c.tolist()) for r, c in overlap_groups(weights))
    assert groups == [([0, 1], [0]), ([2], [2])]


def test_match_rectangles_iou_and_pairs():
    h, w = 40, 50
    expert = [rect(h, w, 0, 0, 10, 10), rect(h, w, 20, 20, 30, 40)]
    pred = [rect(h, w, 20, 22, 30, 42), rect(h, w, 0, 0, 10, 10), rect(h, w, 35, 45, 40, 50)]
    iou, pairs = match(rle.encode(np.stack(pred)), rle.encode(np.stack(expert)), h, w)
    assert iou.shape == (3, 2)
    assert iou[1, 0] == 1.0
    assert iou[0, 1] == pytest.approx(180 / 220)  # 10 x 18 overlap; 2 x 100 - 180 union
    assert iou[2].sum() == 0
    assert pairs == [(0, 1), (1, 0)]


def test_match_with_an_empty_side():
    h, w = 8, 8
    iou, pairs = match([], rle.encode(rect(h, w, 0, 0, 4, 4)[None]), h, w)
    assert iou.shape == (0, 1) and pairs == []
    iou, pairs = match(rle.encode(rect(h, w, 0, 0, 4, 4)[None]), [], h, w)
    assert iou.shape == (1, 0) and pairs == []
