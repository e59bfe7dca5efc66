"""Scoring masks with a trained verifier, and the routes of stage 2.

`Verifier(checkpoint)` loads a model.pt of stage=verifier once; `scores(image, rows)` gives each mask
row of the image a score in [0, 1] (the chance it is acceptable as it is). `route(score, accept,
reject)` sends a prefilled mask to one of three routes: accepted (kept without review) at score >=
accept, rejected (dropped) below reject, and review (shown to annotators) in between; a threshold of
None turns its route off.
"""

from __future__ import annotations

import json
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


def route_of(row: dict) -> str | None:
    """The route stage=semi gave a mask row (`extra.route`), or None: not routed."""
    return json.loads(row.get("extra") or "{}").get("route")


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
