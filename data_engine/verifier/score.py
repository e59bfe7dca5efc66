"""Scoring masks with a trained verifier.

`Scorer(checkpoint)` loads a model.pt of stage=verifier once; `scores(image, rows)` gives each mask row
of the image a score in [0, 1] (the chance it is acceptable as it is). The routes these scores send
stage 2's prefilled masks to are routes.py's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_engine.model.build import default_device
from data_engine.verifier.features import mask_crops, mask_scalars, model_inputs
from data_engine.verifier.model import load_verifier


class Scorer:
    """A stage=verifier model.pt, loaded once on `device` (null: cuda when available)."""

    def __init__(self, checkpoint: str | Path, device: str | None = None):
        self.device = device or default_device()
        self.model = load_verifier(checkpoint, self.device)
        self.size, self.context = self.model.settings["crop_size"], self.model.settings["context"]

    def scores(self, image: np.ndarray, rows: list[dict]) -> np.ndarray:
        """[H, W, 3] uint8 image and its mask rows -> [N] float scores in [0, 1]."""
        crops = mask_crops(image, rows, self.size, self.context)
        return predict(self.model, crops, mask_scalars(rows), self.device)

    def score_rows(self, image: np.ndarray, rows: list[dict]) -> list[dict]:
        """The rows with their verifier_score set."""
        for row, score in zip(rows, self.scores(image, rows)):
            row["verifier_score"] = float(score)
        return rows


@torch.inference_mode()
def predict(model, crops: np.ndarray, scalars: np.ndarray, device, batch_size: int = 512) -> np.ndarray:
    """[N] scores in [0, 1] of uint8 crops [N, 4, S, S] and scalars [N, F] (features.py), batch by batch."""
    training, out = model.training, []
    model.eval()
    for i in range(0, len(crops), batch_size):
        logits = model(*model_inputs(crops[i : i + batch_size], scalars[i : i + batch_size], device))
        out.append(torch.sigmoid(logits).float().cpu().numpy())
    model.train(training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def checkpoint_record(checkpoint: str | None) -> dict | None:
    """Path and SHA-256 of verifier.checkpoint for a run record (None without one); the file is loaded
    here, so a bad one fails before any worker starts."""
    from data_engine.io.atomic import sha256_file

    if not checkpoint:
        return None
    path = Path(checkpoint).expanduser().resolve()
    load_verifier(path)
    return {"checkpoint": str(path), "sha256": sha256_file(path)}
