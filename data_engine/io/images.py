"""Read any input image as RGB uint8, or fail with a reason a user can act on."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# We check the pixel count ourselves (input.max_pixels) before decoding.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An input file that cannot be used as an image; the message says why."""


def load_rgb(path: str | Path, max_pixels: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB, EXIF orientation applied."""
    path = Path(path)
    check_readable(path)
    img = open_image(path)
    check_pixels(img, max_pixels)
    decode_fully(img)
    img = ImageOps.exif_transpose(img)
    return to_rgb8(img)


def check_readable(path: Path) -> int:
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror}") from None
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    return size


def open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except Exception as err:  # PIL raises several types for non-images
        raise ImageError(f"not a readable image ({type(err).__name__}: {err})") from None


def check_pixels(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(
            f"image is {w}x{h} = {w * h} pixels, above input.max_pixels={max_pixels}; "
            "downscale it or raise input.max_pixels"
        )


def decode_fully(img: Image.Image) -> None:
    """Decode now, so truncated or corrupt data fails here rather than later."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            img.load()
    except Exception as err:
        raise ImageError(f"corrupt or truncated image data ({type(err).__name__}: {err})") from None


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Map every PIL mode (1, L, P, RGBA, I;16, I, F, CMYK, ...) to RGB uint8."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return gray_to_rgb(scale_to_uint8(np.asarray(img)))
    if img.mode == "RGB":
        return np.asarray(img).copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")  # alpha dropped: colour kept as stored
    return np.asarray(img.convert("RGB")).copy()


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit and float images: full 16-bit range maps to 0..255; floats use their own range."""
    is_float = np.issubdtype(values.dtype, np.floating)
    values = values.astype(np.float64)
    peak = values.max(initial=0)
    top = 1.0 if is_float and peak <= 1.0 else 65535.0 if peak > 255 else 255.0
    return np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)
