"""Small deterministic test pictures drawn with OpenCV."""

import cv2
import numpy as np


def shapes_image(seed: int, height: int = 192, width: int = 256) -> np.ndarray:
    """A few filled shapes of different colours on a noisy background: [H, W, 3] uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), rng.integers(20, 80), np.uint8)
    for _ in range(4):
        color = tuple(int(c) for c in rng.integers(90, 255, 3))
        cx, cy = int(rng.integers(30, width - 30)), int(rng.integers(30, height - 30))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), int(rng.integers(12, 40)), color, -1)
        else:
            w, h = int(rng.integers(15, 60)), int(rng.integers(15, 60))
            cv2.rectangle(img, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), color, -1)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)
