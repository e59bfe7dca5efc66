"""The SA-1B recipe's per-mask rules, checked on masks whose answer is known by construction."""

import math

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batched_mask_to_box

from data_engine.amg.postprocess import (
    box_of,
    clean_small_regions,
    clean_small_regions_rle,
    largest_component,
    stability_score,
    stability_thresholds,
    support_windows,
    window_filters,
)
from data_engine.io import rle


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
            counts, boxed_changed, box = clean_small_regions_rle(
                rle.encode(mask[None])[0], *mask.shape, min_area, keep_largest
            )
            assert boxed_changed == full_changed
            assert (counts is None) == (full is None)
            if full is not None:
                assert np.array_equal(rle.decode(counts, *mask.shape), full)
                assert counts == rle.encode(full[None])[0]
                assert box == box_of(full)


def low_res_logits(rng, n, side) -> torch.Tensor:
    """[n, side, side] logits like a decoder's: smooth blobs over a negative floor, some all below."""
    yy, xx = np.mgrid[0:side, 0:side]
    out = np.full((n, side, side), -12.0)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            y, x, r = rng.uniform(-5, side + 5), rng.uniform(-5, side + 5), rng.uniform(0.5, side / 3)
            out[i] = np.maximum(out[i], 8.0 - 20.0 * np.hypot(yy - y, xx - x) / r)
    return torch.as_tensor(out + rng.normal(0, 0.05, out.shape), dtype=torch.float32)


# (encoder side, low-res side, crop height, crop width): SAM's sizes, upscaled, downscaled and tiny crops
SIZES = [(1024, 256, 1500, 2209), (1024, 256, 751, 1100), (1024, 256, 300, 360), (1024, 256, 5, 3), (256, 64, 90, 257)]


@pytest.mark.parametrize("side, low_side, height, width", SIZES)
@pytest.mark.parametrize("low, high", [(-1.0, 1.0), (0.0, 0.2)])
def test_windows_hold_every_pixel_above_the_thresholds_and_give_the_full_figures(
    side, low_side, height, width, low, high
):
    rng = np.random.default_rng(height * width)
    low_res = low_res_logits(rng, 12, low_side)
    scale = side / max(height, width)
    input_size = (int(height * scale + 0.5), int(width * scale + 0.5))  # ResizeLongestSide's shape
    model = type("Stub", (), {"image_encoder": type("Encoder", (), {"img_size": side})})()
    logits = Sam.postprocess_masks(model, low_res[:, None], input_size, (height, width))[:, 0]
    threshold = min(low, 0.0)
    windows = support_windows(low_res, threshold, side, input_size, (height, width))
    # No pixel above the lowest threshold outside its window, and the windows are much smaller than the crop
    inside = torch.zeros_like(logits, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(windows.tolist()):
        inside[i, y0:y1, x0:x1] = True
    assert not ((logits > threshold) & ~inside).any()
    if height * width > 10_000:
        assert inside.float().mean() < 0.5
    # Stability, boxes, areas and masks as computed on the whole crop
    stability, boxes, areas, masks = window_filters(logits, windows, low, high, 0.0)
    full = logits > 0.0
    torch.testing.assert_close(stability, stability_score(logits, low, high), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(boxes, batched_mask_to_box(full)) and torch.equal(areas, full.flatten(1).sum(1))
    for i, (y0, y1, x0, x1) in enumerate(windows.tolist()):
        assert torch.equal(masks[i], full[i, y0:y1, x0:x1]) and masks[i].sum() == full[i].sum()


def test_masks_sharing_a_window_are_computed_together():
    logits = torch.randn(5, 40, 30)
    windows = torch.tensor([[0, 40, 0, 30]]).expand(5, 4)
    stability, boxes, areas, masks = window_filters(logits, windows, -1.0, 1.0, 0.0)
    assert torch.equal(areas, (logits > 0).flatten(1).sum(1)) and all(m.shape == (40, 30) for m in masks)
    torch.testing.assert_close(stability, stability_score(logits, -1.0, 1.0), rtol=0, atol=0)
