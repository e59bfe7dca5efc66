"""The expert masks benchmarks/real_photos.py derives from scikit-image's real photos stay what was checked by eye."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def real_photos():
    path = Path(__file__).parents[1] / "benchmarks" / "real_photos.py"
    spec = importlib.util.spec_from_file_location("real_photos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coins_give_24_separate_coin_masks(real_photos):
    image, masks = real_photos.coins()
    assert image.shape == (303, 384, 3) and image.dtype == np.uint8
    assert len(masks) == 24
    assert int(np.sum(masks, axis=0).max()) == 1  # no pixel in two coins
    areas = [int(m.sum()) for m in masks]
    assert 900 < min(areas) and max(areas) < 4000  # each a whole coin: no fragment, no merged pair


def test_coffee_gives_the_cups_mouth(real_photos):
    image, masks = real_photos.coffee()
    assert image.shape == (400, 600, 3)
    assert len(masks) == 1
    ys, xs = np.nonzero(masks[0])
    assert 30000 < masks[0].sum() < 40000
    assert 150 < xs.min() and xs.max() < 420 and ys.max() < 220  # the cup's mouth, not the saucer
