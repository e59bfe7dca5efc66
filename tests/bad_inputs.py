"""A folder with every kind of awkward input file, and what each should become."""

import io
import os
from pathlib import Path

import cv2
import numpy as np
from images import shapes_image
from PIL import Image


def png_bytes(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=90)
    return out.getvalue()


def pil_bytes(rgb: np.ndarray, mode: str, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(out, format=fmt)
    return out.getvalue()


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Write the files; returns {file name: expected status ('ok' or a phrase of the failure reason)}."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = shapes_image(3, 64, 80)
    files = {
        "good.png": (png_bytes(rgb[:, :, ::-1]), "ok"),
        "gray.png": (png_bytes(rgb[:, :, 0]), "ok"),
        "rgba.png": (png_bytes(np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 128, np.uint8)])), "ok"),
        "deep16.png": (png_bytes(rgb[:, :, ::-1].astype(np.uint16) * 257), "ok"),
        "one_pixel.png": (png_bytes(np.full((1, 1, 3), 200, np.uint8)), "ok"),
        "photo.jpg": (jpeg_bytes(rgb), "ok"),
        "cmyk.jpg": (pil_bytes(rgb, "CMYK", "JPEG"), "ok"),
        "palette.png": (pil_bytes(rgb, "P", "PNG"), "ok"),
        "nested/deeper/inner.png": (png_bytes(rgb[::-1]), "ok"),
        "empty.png": (b"", "empty file"),
        "not_an_image.jpg": (b"this is a text file, not a JPEG\n" * 4, "not a readable image"),
        "truncated.png": (png_bytes(rgb)[:300], "truncated"),
        "truncated.jpg": (jpeg_bytes(rgb)[: len(jpeg_bytes(rgb)) // 2], "truncated"),
        "huge.png": (png_bytes(np.zeros((8000, 7000), np.uint8)), "above input.max_pixels"),
    }
    for name, (data, _) in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink(folder / "missing-target.png", folder / "dangling.png")  # unreadable: the target is gone
    expected = {name: status for name, (_, status) in files.items()}
    expected["dangling.png"] = "cannot read file"
    (folder / "notes.txt").write_text("not an image extension: ignored, and reported as ignored")
    return expected
