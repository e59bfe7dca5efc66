"""Read any input image as RGB uint8, or fail with a reason a user can act on.

Every image and mask file is opened here lazily: its size and EXIF orientation come from the header,
so a file is refused by its pixel count before a single pixel is decoded. Pillow's own
decompression-bomb limit stays in force as the ceiling above any configured limit.
"""

from __future__ import annotations

import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
WARNINGS_LOCK = threading.Lock()  # warnings filters are process-wide: images are read in several threads
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_MAX_CHUNKS = 1 << 20  # a PNG walked for a trailing eXIf chunk is given up on after this many chunks


class ImageError(ValueError):
    """An input file that cannot be used as an image; the message says why."""


def load_rgb(path: str | Path, max_pixels: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB, EXIF orientation applied."""
    path = Path(path)
    check_readable(path)
    img = open_image(path)
    check_pixels(img, max_pixels)
    turn = orientation(img, path)
    decode_fully(img)
    if turn in TRANSPOSE:
        img = img.transpose(TRANSPOSE[turn])
    return to_rgb8(img)


def image_size(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h, w) as load_rgb returns the image, (h, w) as stored), from the header: no pixel is decoded."""
    with open_image(path) as img:
        w, h = img.size
        turned = orientation(img, path) in ROTATED
    return ((w, h) if turned else (h, w)), (h, w)


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


def open_image(source) -> Image.Image:
    """The image opened lazily (header read, pixels not decoded); a path or a binary file object."""
    try:
        with WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # callers check pixels themselves
            return Image.open(source)
    except Image.DecompressionBombError:
        raise ImageError(
            f"image is above Pillow's decompression-bomb limit of {2 * Image.MAX_IMAGE_PIXELS} pixels; downscale it"
        ) from None
    except Exception as err:  # PIL raises several types for non-images
        raise ImageError(f"not a readable image ({type(err).__name__}: {err})") from None


def check_pixels(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(
            f"image is {w}x{h} = {w * h} pixels, above input.max_pixels={max_pixels}; "
            "downscale it or raise input.max_pixels"
        )


def orientation(img: Image.Image, path: Path | None = None) -> int:
    """The EXIF orientation (1..8) from the header. Pillow loads a whole PNG to look for a trailing
    eXIf chunk; here that chunk is found by walking the chunk list of the file instead."""
    if img.format == "PNG" and "exif" not in img.info and path is not None:
        found = png_trailing_exif(path)
        if found:
            img.info["exif"] = found
    try:
        value = Image.Image.getexif(img).get(EXIF_ORIENTATION, 1)  # the base method never decodes pixels
    except Exception:  # a corrupt EXIF block: the image is used as stored
        return 1
    return value if value in TRANSPOSE else 1


def png_trailing_exif(path: Path) -> bytes:
    """The eXIf chunk of a PNG file (b"" when none), read by seeking over every other chunk."""
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return b""
        size = f.seek(0, 2)
        f.seek(8)
        for _ in range(PNG_MAX_CHUNKS):
            header = f.read(8)
            if len(header) < 8:
                return b""
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND" or f.tell() + length > size:
                return b""
            if kind == b"eXIf":
                return f.read(length)
            f.seek(length + 4, 1)  # the data and its CRC
    return b""


def decode_fully(img: Image.Image) -> None:
    """Decode now, so truncated or corrupt data fails here rather than later: an error, or a warning
    Pillow gives while decoding (e.g. a truncated tile). Warnings are recorded rather than turned into
    errors: the filters are process-wide, and "error" would also break other threads' calls."""
    try:
        with WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img.load()
    except Exception as err:
        raise ImageError(f"corrupt or truncated image data ({type(err).__name__}: {err})") from None
    corrupt = [w for w in caught if "PIL" in Path(w.filename).parts and not issubclass(w.category, DeprecationWarning)]
    if corrupt:
        w = corrupt[0]
        raise ImageError(f"corrupt or truncated image data ({w.category.__name__}: {w.message})")


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
