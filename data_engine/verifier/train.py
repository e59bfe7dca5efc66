"""Verifier training pieces: the model to start from and one optimizer step.

The resumable loop around them is train.loop's (stage=verifier): step `n` draws its batch from
(seed, n) alone, so a resumed run replays the same batches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from data_engine.verifier.features import SCALARS, model_inputs
from data_engine.verifier.model import MaskVerifier, load_verifier
from data_engine.verifier.settings import Verifier


def initial_model(settings: Verifier, seed: int, device: str) -> MaskVerifier:
    """Seeded fresh weights (the scalars' standardization still to fit), or those of verifier.checkpoint
    (its crop settings and standardization win); train mode."""
    if settings.checkpoint:
        return load_verifier(settings.checkpoint, device).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MaskVerifier(settings.crop_size, settings.context, len(SCALARS), settings.width)
    return model.to(device).train()


def make_optimizer(model: MaskVerifier, settings: Verifier) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def train_step(model, optimizer, arrays: dict, settings: Verifier, seed: int, step: int, device) -> dict:
    """One optimizer step on batch_size masks drawn from (seed, step), each mirrored left-right with
    chance 1/2; binary cross-entropy against the labels; dropout seeded from (seed, step) too, so a
    resumed run replays the same step. Returns {"loss"}."""
    rng = np.random.default_rng([seed, step])
    pick = rng.integers(0, len(arrays["labels"]), settings.batch_size)
    crops = arrays["crops"][pick]
    flip = rng.random(len(pick)) < 0.5
    crops[flip] = crops[flip][..., ::-1]
    x, s = model_inputs(np.ascontiguousarray(crops), arrays["scalars"][pick], device)
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(int(rng.integers(1 << 62)))
        loss = F.binary_cross_entropy_with_logits(model(x, s), torch.as_tensor(arrays["labels"][pick], device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    return {"loss": loss.item()}
