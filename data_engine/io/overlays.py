"""Overlay pictures: each mask of an image in its own colour over the image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data_engine.io import rle
from data_engine.io.dataset import Dataset
from data_engine.io.images import load_rgb


def draw(
    image: np.ndarray, masks: list[np.ndarray], colors: np.ndarray | None = None, seed: int = 0, alpha: float = 0.5
) -> np.ndarray:
    """[H, W, 3] uint8 image, [H, W] bool masks -> the masks blended over the image, largest first so small
    masks stay visible, each outlined in its colour; colors [N, 3] RGB, or random bright ones from `seed`."""
    order = sorted(range(len(masks)), key=lambda i: -masks[i].sum())
    if colors is None:
        rng = np.random.default_rng(seed)
        colors = np.zeros((len(masks), 3), np.float32)
        for i in order:
            colors[i] = rng.integers(40, 256, 3)
    out = image.astype(np.float32)
    for i in order:
        out[masks[i]] = (1 - alpha) * out[masks[i]] + alpha * np.asarray(colors[i], np.float32)
        out = outline(out, [masks[i]], tuple(float(c) for c in colors[i]))
    return out.clip(0, 255).astype(np.uint8)


def outline(picture: np.ndarray, masks: list[np.ndarray], color: tuple, thickness: int = 1) -> np.ndarray:
    """Each mask's outer contour drawn on the picture in `color`."""
    out = np.ascontiguousarray(picture)
    for mask in masks:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color, thickness)
    return out


def write_overlays(out_dir: Path, root: Path, limit: int) -> list[str]:
    """PNG overlays for the first `limit` images that have masks; returns their paths."""
    table = Dataset.open(out_dir).masks(columns=["file_name", "height", "width", "segmentation"]).to_pylist()
    by_file: dict[str, list[dict]] = {}
    for row in table:
        by_file.setdefault(row["file_name"], []).append(row)
    written = []
    for name in sorted(by_file)[:limit]:
        rows = by_file[name]
        masks = [rle.decode(r["segmentation"], r["height"], r["width"]) for r in rows]
        picture = draw(load_rgb(Path(root) / name, max_pixels=1 << 62), masks)
        target = Path(out_dir) / "overlays" / (Path(name).with_suffix("").as_posix().replace("/", "__") + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        written.append(str(target))
    return written
