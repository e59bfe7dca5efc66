"""The train stage: train or fine-tune SAM on collected masks, with atomic resumable checkpoints.

output.dir gets checkpoints/last.pt (model, optimizer, step; rewritten every checkpoint_every steps),
model.pt (the final weights as an fp16 state dict: pass it as model.checkpoint), loss_log.jsonl, and
skipped.jsonl (the images and annotations of train.data left out, each with its reason).
Rerunning the same command continues from checkpoints/last.pt. Step `n` samples its batch and prompts
from seed (seed, n), so a resumed run follows the same data as an uninterrupted one.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch

from data_engine.errors import ConfigError
from data_engine.model.build import build_sam, default_device, is_sam2, read_state, seeded_sam
from data_engine.train import loop
from data_engine.train.data import batch, load_sources
from data_engine.train.recipe import batch_loss, recipe_of
from data_engine.train.settings import Train

log = logging.getLogger(__name__)


def run(cfg: dict, settings: Train) -> dict:
    """Train for train.steps optimizer steps (continuing an earlier run in the same output.dir)."""
    return loop.run_training(cfg, settings, partial(train, cfg, settings))


def train(cfg: dict, settings: Train, out_dir: Path, fingerprint: str) -> dict:
    """Build the model, load the data, run the steps, write model.pt; the stage's summary."""
    device = cfg["model"]["device"] or default_device()
    sam = initial_model(cfg, settings, device)
    size, square = sam.image_encoder.img_size, is_sam2(sam)
    examples, skipped = load_sources(settings.data, settings.image_root, size, settings.max_images, square=square)
    loop.record_skipped(out_dir, skipped, "train.data")
    log.info("training on %d images with %d masks", len(examples), sum(len(e["masks"]) for e in examples))
    optimizer = make_optimizer(sam, settings)
    step = loop.resume(out_dir, sam, optimizer, fingerprint, sam.device)
    progress = cfg["runtime"].get("progress", True)
    step = train_loop(sam, optimizer, examples, settings, cfg["seed"], step, out_dir, fingerprint, progress)
    final = out_dir / "model.pt"
    loop.save_checkpoint({k: v.half() if v.is_floating_point() else v for k, v in sam.state_dict().items()}, final)
    return {
        "output": str(out_dir),
        "model": str(final),
        "steps": step,
        "images": len(examples),
        "masks": sum(len(e["masks"]) for e in examples),
        "images_skipped": sum("annotation" not in r for r in skipped),
        "annotations_skipped": sum("annotation" in r for r in skipped),
        "masks_too_small": sum(e["small_masks"] for e in examples),
        "last_loss": loop.last_logged(out_dir),
    }


def initial_model(cfg: dict, settings: Train, device: str):
    """The model group's weights (pretrained), seeded random weights (scratch), or seeded weights
    overwritten by every tensor of model.checkpoint that fits (partial: growing an architecture), in
    train mode."""
    model = cfg["model"]
    if settings.init == "scratch":
        sam = seeded_sam(model["variant"], cfg["seed"], model.get("image_size")).to(device)
    elif settings.init == "partial":
        sam = seeded_sam(model["variant"], cfg["seed"], model.get("image_size")).to(device)
        copy_fitting(sam, model["checkpoint"], model["variant"])
    else:
        sam = build_sam(
            model["variant"],
            model["checkpoint"],
            device,
            model["download"],
            model["cache_dir"],
            model.get("image_size"),
        )
    sam.train()
    if settings.freeze_image_encoder:
        sam.image_encoder.requires_grad_(False)
        sam.image_encoder.eval()
    return sam


def copy_fitting(sam, path: str, variant: str) -> None:
    """Copy the tensors of checkpoint `path` whose name and shape fit `sam`; the rest stay seeded."""
    if not path or not Path(path).expanduser().is_file():
        raise ConfigError(
            f"train.init=partial copies tensors from model.checkpoint, which is {path!r}: "
            "pass model.checkpoint=PATH of an existing checkpoint"
        )
    state = read_state(Path(path).expanduser(), variant)
    own = sam.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ConfigError(f"model.checkpoint={path}: no tensor fits the chosen model variant")
    sam.load_state_dict(fitting, strict=False)
    log.info(
        "init=partial: %d tensors copied from %s, %d new, %d of the checkpoint unused",
        len(fitting),
        path,
        len(own) - len(fitting),
        len(state) - len(fitting),
    )


def make_optimizer(sam, settings: Train) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and position embeddings."""
    params = [(n, p) for n, p in sam.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "pos" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "pos" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=settings.lr,
    )


def train_loop(
    sam, optimizer, examples, settings: Train, seed: int, step: int, out_dir: Path, fingerprint: str, progress: bool
) -> int:
    """Optimizer steps from `step` to train.steps (train.loop: checkpoints and the loss log along the way)."""
    size, recipe = sam.image_encoder.img_size, recipe_of(settings)

    def one_step(step: int) -> dict:
        # Batch and prompts of this step come from (seed, step) only: resuming replays the same data
        rng = np.random.default_rng([seed, step])
        generator = torch.Generator(device=sam.device).manual_seed(int(rng.integers(1 << 62)))
        context = settings.iou_target == "containing"
        per_step, per_image = settings.images_per_step, settings.masks_per_image
        images, masks, *contexts = batch(examples, rng, per_step, per_image, size, settings.area_power, context=context)
        train_encoder = not settings.freeze_image_encoder
        loss, stats = batch_loss(
            sam, images, masks, generator, recipe, train_encoder, contexts[0] if contexts else None
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(sam.parameters(), settings.grad_clip)
        optimizer.step()
        return stats

    run = {"desc": "train", "progress": progress, "postfix": ("loss", "iou")}
    return loop.run_steps(sam, optimizer, settings, step, one_step, out_dir, fingerprint, run)
