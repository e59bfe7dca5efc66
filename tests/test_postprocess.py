"""The SA-1B recipe's per-mask rules, checked on masks whose answer is known by construction."""

import math

import numpy as np
import pytest
import torch

from data_engine.amg.postprocess import (
    clean_small_regions,
    clean_small_regions_in_box,
    largest_component,
    stability_score,
    stability_thresholds,
)


def test_probability_levels_become_logit_thresholds():
    low, high = stability_thresholds(0.0, [0.5, 0.55], None)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(math.log(0.55 / 0.45))


def test_offset_gives_the_released_codes_logit_thresholds():
    assert stability_thresholds(0.0, [0.5, 0.55], 1.0) == (-1.0, 1.0)


def test_stability_is_iou_of_the_two_thresholded_masks():
    logits = torch.zeros(1, 10, 10)
    logits[0, :, :6] = 3.0  # confident: above both levels
    logits[0, :, 6:8] = 0.1  # between p=0.5 (logit 0) and p=0.55 (logit 0.2)
    low, high = stability_thresholds(0.0, [0.5, 0.55], None)
    assert stability_score(logits, low, high).item() == pytest.approx(60 / 80)


def square_with_extras() -> np.ndarray:
    mask = np.zeros((60, 60), bool)
    mask[5:35, 5:35] = True  # 900 px body
    mask[15:18, 15:18] = False  # 9 px hole
    mask[50:53, 50:53] = True  # 9 px island
    return mask


def test_small_holes_filled_and_islands_removed():
    cleaned, changed = clean_small_regions(square_with_extras(), 100, keep_largest=False)
    expected = np.zeros((60, 60), bool)
    expected[5:35, 5:35] = True
    assert changed and np.array_equal(cleaned, expected)


def test_mask_of_only_small_islands_is_removed_in_sa1b_mode():
    mask = np.zeros((60, 60), bool)
    mask[2:10, 2:10] = True  # 64 px
    mask[30:35, 30:35] = True  # 25 px
    assert largest_component(mask) == 64
    cleaned, changed = clean_small_regions(mask, 100, keep_largest=False)
    assert cleaned is None and changed


def test_released_code_keeps_the_largest_small_island():
    mask = np.zeros((60, 60), bool)
    mask[2:10, 2:10] = True
    mask[30:35, 30:35] = True
    cleaned, changed = clean_small_regions(mask, 100, keep_largest=True)
    assert changed and cleaned.sum() == 64 and cleaned[2:10, 2:10].all()


def test_untouched_mask_reports_no_change():
    mask = np.zeros((40, 40), bool)
    mask[5:30, 5:30] = True
    cleaned, changed = clean_small_regions(mask, 100, keep_largest=False)
    assert not changed and np.array_equal(cleaned, mask)


def random_mask(rng, height, width) -> np.ndarray:
    """Blobs with holes and specks, sometimes at the image edge, sometimes tiny."""
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, 4)):
        h, w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        mask[y : y + h, x : x + w] = True
    mask ^= rng.random((height, width)) < 0.02  # specks: small holes and islands
    return mask


@pytest.mark.parametrize("keep_largest", [False, True])
def test_cleaning_inside_the_box_is_the_full_image_result(keep_largest):
    rng = np.random.default_rng(0)
    cases = [random_mask(rng, *rng.integers(8, 90, 2)) for _ in range(150)]
    # A ring whose outside, in a small image, is itself a small region; a mask spanning the full width
    ring = np.ones((12, 12), bool)
    ring[3:6, 3:6] = False
    band = np.zeros((60, 40), bool)
    band[20:30] = True
    band[25, 10] = False
    empty = np.zeros((30, 30), bool)
    for mask in cases + [ring, ~ring, band, empty]:
        for min_area in (1, 5, 30, 100):
            full, full_changed = clean_small_regions(mask, min_area, keep_largest)
            boxed, boxed_changed = clean_small_regions_in_box(mask, min_area, keep_largest)
            assert boxed_changed == full_changed
            assert (boxed is None) == (full is None)
            if full is not None:
                assert np.array_equal(boxed, full)
