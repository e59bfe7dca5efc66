"""Shared pieces of the assisted-stage tests: the hand-written fixture files and the images they name."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data" / "assisted"

# The images the fixture files refer to: name -> (width, height)
IMAGES = {
    "photos/street.jpg": (64, 48),
    "photos/park.png": (40, 30),
    "photos/square.png": (50, 50),
    "filename000.jpg": (1600, 1200),
}


def make_images(root: Path, names=IMAGES) -> Path:
    """Write the fixture images (coloured blocks on grey) under `root`."""
    for name, (w, h) in names.items():
        pixels = np.full((h, w, 3), 120, np.uint8)
        pixels[h // 4 : h // 2, w // 6 : w // 2] = (200, 30, 30)
        pixels[h // 2 :, w // 2 :] = (20, 160, 40)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    return root


def copy_fixture(name: str, dest: Path) -> Path:
    """A fixture file or folder copied to `dest` (so relative image paths resolve next to test images)."""
    source = DATA / name
    target = dest / name
    target.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    return target


def outcome(report: list[dict]) -> list[tuple[str, str]]:
    """(annotation key, 'imported' or the kind of rejection: the reason up to its colon), in report order."""
    return [(r["annotation"], r["status"] if r["status"] == "imported" else r["reason"].split(":")[0]) for r in report]


def statuses(report: list[dict]) -> Counter:
    return Counter(r["status"] for r in report)
