"""What the verifier sees of a mask: the image and the mask in a square window around the mask's box,
and SAM's scores of the mask.

- crops: [N, 4, S, S] uint8, RGB then the mask (0 or 255), of the square window centred on the mask's
  box, its side the box's longer side grown by `context` of it on each side (pixels outside the
  image are 0), resized to S x S;
- scalars: [N, len(SCALARS)] float32: predicted IoU and stability (0 where a mask has none or NaN), the
  log of the mask's share of the image (/ 10), and 1 for a mask found in a zoomed crop of the image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from data_engine.io import rle

SCALARS = ("predicted_iou", "stability_score", "log_area", "from_crop")


def mask_crops(image: np.ndarray, rows: list[dict], size: int, context: float) -> np.ndarray:
    """[H, W, 3] uint8 image, mask rows of it (segmentation, bbox XYWH) -> [N, 4, size, size] uint8."""
    h, w = image.shape[:2]
    out = np.zeros((len(rows), 4, size, size), dtype=np.uint8)
    for i, row in enumerate(rows):
        mask = rle.decode(row["segmentation"], h, w)
        patch = window(np.concatenate([image, mask[:, :, None] * np.uint8(255)], axis=2), row["bbox"], context)
        t = torch.from_numpy(patch).permute(2, 0, 1)[None].float()  # [1, 4, h', w']
        resized = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i] = resized[0].round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def window(layers: np.ndarray, bbox, context: float) -> np.ndarray:
    """[h', w', C]: the square around the XYWH box, side max(w, h) * (1 + 2 * context), zero outside `layers`."""
    x, y, bw, bh = (float(v) for v in bbox)
    side = max(bw, bh, 1.0) * (1 + 2 * context)
    x0, y0 = math.floor(x + bw / 2 - side / 2), math.floor(y + bh / 2 - side / 2)
    x1, y1 = x0 + max(math.ceil(side), 1), y0 + max(math.ceil(side), 1)
    out = np.zeros((y1 - y0, x1 - x0, layers.shape[2]), dtype=layers.dtype)
    H, W = layers.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = layers[cy0:cy1, cx0:cx1]
    return out


def mask_scalars(rows: list[dict]) -> np.ndarray:
    """[N, len(SCALARS)] float32 of mask rows (height, width, area, predicted_iou, stability_score, crop_box)."""
    out = np.zeros((len(rows), len(SCALARS)), dtype=np.float32)
    for i, row in enumerate(rows):
        h, w = row["height"], row["width"]
        crop = row.get("crop_box")
        out[i] = [
            finite(row.get("predicted_iou")),
            finite(row.get("stability_score")),
            math.log(max(row["area"], 1) / (h * w)) / 10,
            float(crop is not None and [float(v) for v in crop] != [0.0, 0.0, float(w), float(h)]),
        ]
    return out


def finite(value) -> float:
    """A score, or 0 where there is none (an imported mask) or it is NaN (stability of an empty mask)."""
    return float(value) if value is not None and math.isfinite(value) else 0.0


def model_inputs(crops: np.ndarray, scalars: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 crops and scalars -> the network's float tensors on `device` (crops centred on 0)."""
    x = torch.as_tensor(crops, device=device).float() / 255 - 0.5
    return x, torch.as_tensor(scalars, device=device)
