"""Detector training pieces: the model to start from, the optimizer, and one optimizer step."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from data_engine.detector.data import batch
from data_engine.detector.model import DetectorCheckpointError, build_detector, read_start_weights
from data_engine.detector.settings import Detector

log = logging.getLogger(__name__)


def initial_model(detector: Detector, seed: int, device: str) -> nn.Module:
    """Seeded fresh weights, overwritten by every tensor of detector.checkpoint that fits; train mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_detector(detector.variant, **detector.build_settings())
    if detector.checkpoint:
        copy_fitting(model, detector.checkpoint, detector.variant)
    return model.to(device).train()


def copy_fitting(model: nn.Module, path: str, variant: str) -> None:
    """Start from a checkpoint: this project's, or a torchvision state dict for the variant (a head of
    another class count, e.g. COCO's 91, stays freshly initialised)."""
    state = read_start_weights(path, variant)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) // 2:
        raise DetectorCheckpointError(
            f"detector.checkpoint={path}: only {len(fitting)} of the {len(own)} tensors of detector.variant="
            f"{variant} fit; pass a checkpoint of this variant"
        )
    model.load_state_dict(fitting, strict=False)
    log.info("detector.checkpoint: %d of %d tensors loaded from %s", len(fitting), len(own), path)


def make_optimizer(model: nn.Module, detector: Detector) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum 0.9); no weight decay on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": detector.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if detector.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=detector.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=detector.lr)


def train_step(
    model: nn.Module, optimizer, examples: list[dict], detector: Detector, seed: int, step: int, device
) -> dict:
    """One optimizer step on a batch drawn from (seed, step) alone, so a resumed run replays the same
    batches; torch's sampling of proposals is seeded the same way. Returns the step's losses."""
    rng = np.random.default_rng([seed, step])
    images, targets = batch(examples, rng, detector.images_per_step, detector.hflip, device)
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(int(rng.integers(1 << 62)))
        losses = model(images, targets)  # {loss_classifier, loss_box_reg, loss_objectness, loss_rpn_box_reg}
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    if detector.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), detector.grad_clip)
    optimizer.step()
    return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}
