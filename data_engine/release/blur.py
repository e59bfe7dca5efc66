"""Privacy blur before release: faces and licence plates found by OpenCV's Haar cascades, each box blurred.

The cascades ship inside the opencv-python(-headless) 4.x wheels (`cv2.data.haarcascades`); nothing is
downloaded. Only pixels inside a box change; masks are never touched.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data_engine.errors import ConfigError

DETECTORS = ("haar", "none")


class BlurError(ConfigError):
    """A detector cannot be set up; the message names the key and what to do."""


class PrivacyBlur:
    """Detect boxes of each kind (face, plate, ...) in an RGB image and Gaussian-blur them.

    Arguments:
      detector: "haar" (OpenCV cascades) or "none" (release without blurring; every image counts as checked).
      cascades: {kind: cascade file}: a name inside cv2.data.haarcascades or a path to an XML file.
      scale_factor, min_neighbors, min_size: `CascadeClassifier.detectMultiScale`'s settings (min_size in px).
      strength: Gaussian sigma as a fraction of the box's shorter side.
      pad: each box grows by this fraction of its size on every side (clipped to the image) before blurring.
    """

    def __init__(
        self,
        detector: str = "haar",
        cascades: dict | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        strength: float = 0.25,
        pad: float = 0.1,
    ):
        if detector not in DETECTORS:
            raise BlurError(f"release.blur.detector={detector!r}: choose one of {list(DETECTORS)}")
        self.cascades = {} if detector == "none" else {k: load_cascade(k, f) for k, f in (cascades or {}).items()}
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.strength, self.pad = strength, pad

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """[H, W, 3] uint8 RGB -> (blurred copy, [{"box": [x, y, w, h], "kind": kind}, ...] in released px)."""
        boxes = self.detect(image)
        return blur_boxes(image, [b["box"] for b in boxes], self.strength), boxes

    def detect(self, image: np.ndarray) -> list[dict]:
        if not self.cascades:
            return []
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        found = []
        for kind, cascade in self.cascades.items():
            raw = cascade.detectMultiScale(
                gray,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size),
            )
            # Deterministic order: top to bottom, left to right, per kind
            boxes = sorted(pad_box(b, self.pad, image.shape[:2]) for b in np.asarray(raw).reshape(-1, 4).tolist())
            found += [{"box": box, "kind": kind} for box in boxes]
        return found


def load_cascade(kind: str, name: str) -> cv2.CascadeClassifier:
    """A cascade by file name inside cv2.data.haarcascades, or by path."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = Path(name).expanduser()
    if not path.is_file():
        path = Path(folder) / name
    cascade = cv2.CascadeClassifier(str(path)) if path.is_file() else None
    if cascade is None or cascade.empty():
        raise BlurError(
            f"release.blur.cascades.{kind}={name}: no loadable Haar cascade at {path}; the opencv-python 4.x "
            "wheels ship them (the 5.0 wheel does not: install the version pinned in constraints.txt), "
            "or give the path of a cascade XML file"
        )
    return cascade


def pad_box(box: list[int], pad: float, shape: tuple[int, int]) -> list[int]:
    """[x, y, w, h] grown by `pad` of its size on each side, clipped to the [H, W] image."""
    x, y, w, h = box
    dx, dy = round(w * pad), round(h * pad)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(shape[1], x + w + dx), min(shape[0], y + h + dy)
    return [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]


def blur_boxes(image: np.ndarray, boxes: list[list[int]], strength: float) -> np.ndarray:
    """Gaussian-blur each [x, y, w, h] box of [H, W, 3] uint8 in turn; pixels outside every box stay equal."""
    out = image.copy()
    for x, y, w, h in boxes:
        if w <= 0 or h <= 0:
            continue
        sigma = max(1.0, strength * min(w, h))
        roi = np.ascontiguousarray(out[y : y + h, x : x + w])
        out[y : y + h, x : x + w] = cv2.GaussianBlur(roi, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return out
