"""Boundary IoU against an independent pixel-by-pixel band and against cases known by construction."""

import numpy as np
import pytest
from maskdata import rect
from numpy.lib.stride_tricks import sliding_window_view

from data_engine.audit.boundary import band_width, boundary_iou, inner_band


def naive_band(mask: np.ndarray, d: int) -> np.ndarray:
    """Mask pixels with a background pixel (or the outside) within a (2d+1) square: straight from the definition."""
    padded = np.pad(mask, d, constant_values=False)
    all_inside = sliding_window_view(padded, (2 * d + 1, 2 * d + 1)).all(axis=(2, 3))
    return mask & ~all_inside


def naive_boundary_iou(a, b, d):
    ba, bb = naive_band(a, d), naive_band(b, d)
    return (ba & bb).sum() / (ba | bb).sum()


def test_band_width_is_two_percent_of_the_diagonal():
    assert band_width(300, 400) == 10  # diagonal 500
    assert band_width(1500, 2250) == round(0.02 * np.hypot(1500, 2250))
    assert band_width(10, 10) == 1  # never below one pixel
    assert band_width(300, 400, ratio=0.05) == 25


def test_band_of_an_inner_rectangle_is_a_ring():
    mask = rect(60, 60, 10, 10, 50, 50)  # 40 x 40, away from the image edge
    band = inner_band(mask, 3)
    assert band.sum() == 40 * 40 - 34 * 34
    assert not band[20:40, 20:40].any()


def test_image_edge_counts_as_background():
    mask = rect(30, 30, 0, 0, 30, 30)  # the whole image
    assert inner_band(mask, 2).sum() == 30 * 30 - 26 * 26


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_definition_on_random_shapes(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((40, 50)) > 0.3
    b = np.roll(a, int(rng.integers(-3, 4)), axis=1) | (rng.random((40, 50)) > 0.9)
    d = int(rng.integers(1, 4))
    assert np.array_equal(inner_band(a, d), naive_band(a, d))
    assert boundary_iou(a, b, d) == pytest.approx(naive_boundary_iou(a, b, d))


def test_identical_disjoint_and_empty():
    a = rect(50, 50, 5, 5, 20, 20)
    assert boundary_iou(a, a, 2) == 1.0
    assert boundary_iou(a, rect(50, 50, 30, 30, 45, 45), 2) == 0.0
    empty = np.zeros((50, 50), bool)
    assert boundary_iou(empty, empty, 2) == 1.0
    assert boundary_iou(a, empty, 2) == 0.0


def test_eroded_square_known_by_construction():
    # Square of side L and the same square eroded by e < d: the bands overlap at depths e..d-1.
    L, e, d = 40, 1, 3
    a = rect(80, 80, 20, 20, 20 + L, 20 + L)
    b = rect(80, 80, 20 + e, 20 + e, 20 + L - e, 20 + L - e)
    ring_a = L**2 - (L - 2 * d) ** 2
    ring_b = (L - 2 * e) ** 2 - (L - 2 * e - 2 * d) ** 2
    inter = (L - 2 * e) ** 2 - (L - 2 * d) ** 2
    assert boundary_iou(a, b, d) == pytest.approx(inter / (ring_a + ring_b - inter))


def test_shift_beyond_twice_the_band_leaves_only_the_shared_edges():
    # Two 20 x 20 squares, the second 10 px to the right, d = 2: the bands share only the top and
    # bottom strips (2 rows x 10 columns each) over the overlapping columns; the vertical strips miss.
    a = rect(60, 60, 10, 10, 30, 30)
    b = rect(60, 60, 10, 20, 30, 40)
    ring = 20 * 20 - 16 * 16
    inter = 2 * (2 * 10)
    assert boundary_iou(a, b, 2) == pytest.approx(inter / (2 * ring - inter))
