"""The detector stage: train a class-agnostic box detector on the masks of data-engine outputs or COCO
files, with atomic resumable checkpoints, and measure it on a held-out split.

output.dir gets checkpoints/last.pt (model, optimizer, step; rewritten every checkpoint_every steps),
model.pt (the final detector: pass it as detector.checkpoint to stage=semi), metrics.json (box AP and
AR on the held-out images), loss_log.jsonl, and skipped.jsonl (the images and annotations of
detector.data left out, each with its reason). Rerunning the same command continues from
checkpoints/last.pt; step `n` draws its batch from (seed, n), so a resumed run replays the same data.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from data_engine.detector.data import load_examples, split
from data_engine.detector.evaluate import box_metrics
from data_engine.detector.model import save_detector
from data_engine.detector.settings import Detector
from data_engine.detector.train import initial_model, make_optimizer, train_step
from data_engine.io.atomic import write_json_atomic
from data_engine.model.build import default_device
from data_engine.train import loop

log = logging.getLogger(__name__)


def run(cfg: dict, settings: Detector) -> dict:
    """Train for detector.steps optimizer steps (continuing an earlier run in the same output.dir)."""
    return loop.run_training(cfg, settings, partial(train, cfg, settings))


def train(cfg: dict, settings: Detector, out_dir: Path, fingerprint: str) -> dict:
    """Load the data, build or resume the model, run the steps, measure; the stage's summary."""
    device = settings.device or default_device()
    model = initial_model(settings, cfg["seed"], device)  # first: a bad detector.checkpoint fails before the data loads
    examples, skipped = load_examples(settings.data, settings.image_root, settings.max_size, settings.max_images)
    loop.record_skipped(out_dir, skipped, "detector.data")
    train_set, held_out = split(examples, settings.val_fraction)
    log.info(
        "detector: %d training images, %d held out, %d boxes",
        len(train_set),
        len(held_out),
        sum(len(e["boxes"]) for e in examples),
    )
    optimizer = make_optimizer(model, settings)
    step = loop.resume(out_dir, model, optimizer, fingerprint, device)
    show = progress(cfg)
    step = train_loop(model, optimizer, train_set, settings, cfg["seed"], step, out_dir, fingerprint, device, show)
    final = out_dir / "model.pt"
    save_detector(model, settings.variant, settings.build_settings(), final)
    metrics = {**box_metrics(model.eval(), held_out), "steps": step, "variant": settings.variant}
    write_json_atomic(metrics, out_dir / "metrics.json")
    return {
        "output": str(out_dir),
        "model": str(final),
        "steps": step,
        "train_images": len(train_set),
        "held_out_images": len(held_out),
        "boxes": sum(len(e["boxes"]) for e in examples),
        "images_skipped": sum("annotation" not in r for r in skipped),
        "annotations_skipped": sum("annotation" in r for r in skipped),
        "masks_too_small": sum(e["small_masks"] for e in examples),
        "metrics": metrics,
        "last_loss": loop.last_logged(out_dir),
    }


def progress(cfg: dict) -> bool:
    return cfg["runtime"].get("progress", True)


def train_loop(model, optimizer, examples, settings, seed, step, out_dir, fingerprint, device, show: bool) -> int:
    """Optimizer steps from `step` to detector.steps (train.loop: checkpoints and the loss log along the way)."""
    model.train()
    run = {"desc": "detector", "progress": show, "postfix": ("loss",)}
    one_step = lambda step: train_step(model, optimizer, examples, settings, seed, step, device)  # noqa: E731
    return loop.run_steps(model, optimizer, settings, step, one_step, out_dir, fingerprint, run)
