"""Image decoding: every mode to RGB uint8 with the right values, and clear failures."""

import cv2
import numpy as np
import pytest

from data_engine.io.images import ImageError, load_rgb


def test_16_bit_maps_full_range_to_8_bit(tmp_path):
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 20 * 257
    cv2.imwrite(str(tmp_path / "a.png"), values)
    rgb = load_rgb(tmp_path / "a.png", 10**6)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 4, 3)
    assert np.array_equal(rgb[:, :, 0], (np.arange(12).reshape(3, 4) * 20).astype(np.uint8))
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_rgba_keeps_colour_and_drops_alpha(tmp_path):
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    assert load_rgb(tmp_path / "a.png", 100)[0, 0].tolist() == [30, 20, 10]


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageError, match="above input.max_pixels=9999"):
        load_rgb(tmp_path / "big.png", 9999)


def test_decoding_in_one_thread_does_not_turn_other_threads_warnings_into_errors(tmp_path, monkeypatch):
    """Images are read in prefetch threads while the model runs: a decode must not change how the rest of
    the process treats warnings (a process-wide "error" filter made numpy's DeprecationWarnings fail images)."""
    import threading
    import time
    import warnings

    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    real_load, inside = Image.Image.load, threading.Event()

    def slow_load(self):
        inside.set()
        time.sleep(0.3)  # the other thread warns while this decode is under way
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", slow_load)
    errors = []

    def warn_meanwhile():
        inside.wait(5)
        try:
            warnings.warn("an unrelated deprecation", DeprecationWarning, stacklevel=1)
        except Exception as err:  # what the old process-wide "error" filter did
            errors.append(err)

    other = threading.Thread(target=warn_meanwhile)
    other.start()
    assert load_rgb(path, 1 << 20).shape == (8, 8, 3)
    other.join()
    assert errors == []
