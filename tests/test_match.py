"""One-to-one matching (io/match.py): exact against brute force, greedy best-first, where they differ,
thresholds, and the IoU of known rectangles."""

import itertools

import numpy as np
import pytest
from maskdata import rect

from data_engine.io import rle
from data_engine.io.match import exact_pairs, greedy_pairs, hungarian_max, overlap_groups


def brute_force_best(weights: np.ndarray) -> float:
    """Largest summed weight over every one-to-one assignment (small matrices only)."""
    n, m = weights.shape
    if n > m:
        return brute_force_best(weights.T)
    return max(sum(weights[i, cols[i]] for i in range(n)) for cols in itertools.permutations(range(m), n))


def index_pairs(pairs) -> list[tuple[int, int]]:
    return [(r, c) for r, c, _ in pairs]


def one_to_one(pairs) -> bool:
    return len({r for r, _, _ in pairs}) == len(pairs) == len({c for _, c, _ in pairs})


@pytest.mark.parametrize("seed", range(40))
def test_exact_assignment_is_optimal_and_greedy_never_beats_it(seed):
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(1, 6, 2))
    weights = rng.random((n, m)) * (rng.random((n, m)) > 0.5)  # sparse, like mask overlaps
    exact, greedy = exact_pairs(weights), greedy_pairs(weights, 0.0)
    assert one_to_one(exact) and one_to_one(greedy)
    assert sum(v for _, _, v in exact) == pytest.approx(brute_force_best(weights))
    assert sum(v for _, _, v in greedy) <= sum(v for _, _, v in exact) + 1e-12
    assert all(weights[r, c] == v > 0 for r, c, v in exact + greedy)  # no pair without overlap


def test_greedy_and_exact_differ_where_the_best_pair_blocks_two_good_ones():
    # Greedy takes (0, 0) = 0.9 first and leaves row 1 alone (total 0.9); the exact matcher pairs
    # (0, 1) and (1, 0) for a total of 1.65.
    weights = np.array([[0.9, 0.8], [0.85, 0.0]])
    assert greedy_pairs(weights, 0.5) == [(0, 0, 0.9)]
    assert exact_pairs(weights) == [(0, 1, 0.8), (1, 0, 0.85)]
    assert sorted(hungarian_max(weights)) == [(0, 1), (1, 0)]


def test_greedy_takes_the_best_pair_first_one_to_one():
    # Two near-copies of one mask on one side: only one is matched, the better one
    a = rle.encode(rect(30, 30, 0, 0, 10, 10)[None])
    b = rle.encode(np.stack([rect(30, 30, 0, 0, 10, 9), rect(30, 30, 0, 0, 10, 10)]))
    iou = rle.iou_matrix(a, b, 30, 30)
    assert greedy_pairs(iou, 0.5) == [(0, 1, 1.0)]
    assert greedy_pairs(iou, 1.01) == []


def test_thresholds():
    weights = np.array([[0.95, 0.0], [0.0, 0.3]])
    assert index_pairs(exact_pairs(weights)) == [(0, 0), (1, 1)]
    assert index_pairs(exact_pairs(weights, min_iou=0.5)) == [(0, 0)]
    assert index_pairs(exact_pairs(weights, min_iou=0.3)) == [(0, 0)]  # exact: IoU above min_iou
    assert index_pairs(greedy_pairs(weights, 0.3)) == [(0, 0), (1, 1)]  # greedy: IoU at least min_iou
    assert greedy_pairs(np.zeros((2, 2)), 0.0) == []  # masks that do not overlap are never paired


def test_overlap_groups_split_independent_masks():
    weights = np.zeros((3, 3))
    weights[0, 0] = weights[1, 0] = weights[2, 2] = 0.5
    groups = sorted((r.tolist(), c.tolist()) for r, c in overlap_groups(weights))
    assert groups == [([0, 1], [0]), ([2], [2])]


def test_rectangles_iou_and_pairs():
    h, w = 40, 50
    expert = [rect(h, w, 0, 0, 10, 10), rect(h, w, 20, 20, 30, 40)]
    pred = [rect(h, w, 20, 22, 30, 42), rect(h, w, 0, 0, 10, 10), rect(h, w, 35, 45, 40, 50)]
    iou = rle.iou_matrix(rle.encode(np.stack(pred)), rle.encode(np.stack(expert)), h, w)
    assert iou.shape == (3, 2)
    assert iou[1, 0] == 1.0
    assert iou[0, 1] == pytest.approx(180 / 220)  # 10 x 18 overlap; 2 x 100 - 180 union
    assert iou[2].sum() == 0
    assert index_pairs(exact_pairs(iou)) == [(0, 1), (1, 0)]
    assert index_pairs(greedy_pairs(iou, 0.5)) == [(1, 0), (0, 1)]  # best first


@pytest.mark.parametrize("shape", [(0, 1), (1, 0), (0, 0)])
def test_an_empty_side_has_no_pairs(shape):
    assert exact_pairs(np.zeros(shape)) == [] and greedy_pairs(np.zeros(shape), 0.5) == []
