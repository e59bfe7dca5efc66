"""Scoring masks with a trained verifier, and the routes of stage 2.

`Verifier(checkpoint)` loads a model.pt of stage=verifier once; `scores(image, rows)` gives each mask
row of the image a score in [0, 1] (the chance it is acceptable as it is). `route(score, accept,
reject)` sends a prefilled mask to one of three routes: accepted (kept without review) at score >=
accept, rejected (dropped) below reject, and review (shown to annotators) in between; a threshold of
None turns its route off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_engine.errors import ConfigError, check_number, require
from data_engine.model.build import default_device
from data_engine.verifier.features import mask_crops, mask_scalars, model_inputs
from data_engine.verifier.model import load_verifier

ACCEPTED, REVIEW, REJECTED = "accepted", "review", "rejected"
ROUTES = (ACCEPTED, REVIEW, REJECTED)


class Verifier:
    def __init__(self, checkpoint: str | Path, device: str | None = None, batch_size: int = 256):
        self.device = device or default_device()
        self.model = load_verifier(checkpoint, self.device)
        self.size, self.context = self.model.settings["crop_size"], self.model.settings["context"]
        self.batch_size = batch_size

    @torch.inference_mode()
    def scores(self, image: np.ndarray, rows: list[dict]) -> np.ndarray:
        """[H, W, 3] uint8 image and its mask rows -> [N] float scores in [0, 1]."""
        out = []
        for i in range(0, len(rows), self.batch_size):
            part = rows[i : i + self.batch_size]
            crops, scalars = mask_crops(image, part, self.size, self.context), mask_scalars(part)
            out.append(torch.sigmoid(self.model(*model_inputs(crops, scalars, self.device))).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def score_rows(self, image: np.ndarray, rows: list[dict]) -> list[dict]:
        """The rows with their verifier_score set."""
        for row, score in zip(rows, self.scores(image, rows)):
            row["verifier_score"] = float(score)
        return rows


def route(score: float, accept: float | None, reject: float | None) -> str:
    if accept is not None and score >= accept:
        return ACCEPTED
    if reject is not None and score < reject:
        return REJECTED
    return REVIEW


def check_routing(v: dict) -> dict:
    """verifier.accept and verifier.reject: null or in [0, 1], reject at most accept."""
    check_number(v, "verifier.accept", 0, 1, nullable=True)
    check_number(v, "verifier.reject", 0, 1, nullable=True)
    both = v["accept"] is not None and v["reject"] is not None
    require(
        not both or v["reject"] <= v["accept"],
        "verifier.reject",
        f"{v['reject']} is above verifier.accept={v['accept']}: a mask cannot be both rejected and accepted",
    )
    return v


def checkpoint_record(v: dict) -> dict | None:
    """Path and SHA-256 of verifier.checkpoint for a run record (None without one); the file is loaded
    here, so a bad one fails before any worker starts."""
    from data_engine.io.atomic import sha256_file

    if not v.get("checkpoint"):
        return None
    path = Path(v["checkpoint"]).expanduser()
    if not path.is_file():
        raise ConfigError(f"verifier.checkpoint: {path} does not exist; give a model.pt written by stage=verifier")
    load_verifier(path)
    return {"checkpoint": str(path.resolve()), "sha256": sha256_file(path)}
