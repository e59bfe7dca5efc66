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

import torch

from data_engine.detector.data import load_examples, split
from data_engine.detector.evaluate import box_metrics
from data_engine.detector.model import VARIANTS, save_detector, settings_problem
from data_engine.detector.train import build_settings, initial_model, make_optimizer, train_step
from data_engine.errors import ConfigError, check_bool, check_choice, check_int, check_number, require
from data_engine.io.atomic import write_json_atomic
from data_engine.model.build import default_device
from data_engine.train import loop

log = logging.getLogger(__name__)

POSITIVE_INTS = ("steps", "images_per_step", "checkpoint_every")


def run(cfg: dict) -> dict:
    """Train for detector.steps optimizer steps (continuing an earlier run in the same output.dir)."""
    d = check(cfg["detector"])
    return loop.run_training(cfg, d, partial(train, cfg, d))


def check(d: dict) -> dict:
    """The `detector` group's settings, or a ConfigError naming the key and what to do."""
    check_choice(d, "detector.variant", VARIANTS)
    require(
        not d["checkpoint"] or Path(d["checkpoint"]).expanduser().is_file(),
        "detector.checkpoint",
        f"{d['checkpoint']} does not exist; give a detector checkpoint file",
    )
    require(
        bool(d["data"]) and isinstance(d["data"], list) and all(isinstance(p, str) for p in d["data"]),
        "detector.data",
        f"give one or more data-engine output folders or COCO .json files, e.g. 'detector.data=[out/synth]'; "
        f"got {d['data']!r}",
    )
    for path in d["data"]:
        require(Path(path).expanduser().exists(), "detector.data", f"{path} does not exist")
    for key in POSITIVE_INTS:
        check_int(d, f"detector.{key}", 1)
    problem = settings_problem(build_settings(d))  # the same check as a checkpoint's settings
    if problem:
        raise ConfigError(f"detector.{problem}")
    check_int(d, "detector.warmup_steps", 0)
    for key in ("lr", "weight_decay", "grad_clip"):
        check_number(d, f"detector.{key}", 0)
    check_number(d, "detector.val_fraction", 0, 1)
    check_choice(d, "detector.optimizer", ("adamw", "sgd"))
    for key in ("hflip", "deterministic"):
        check_bool(d, f"detector.{key}")
    check_int(d, "detector.max_images", 1, nullable=True)
    check_int(d, "detector.num_threads", 1, nullable=True)
    device = d["device"]
    require(
        device in (None, "cpu", "cuda") or str(device).startswith("cuda:"),
        "detector.device",
        f"{device!r} is not null, cpu, cuda or cuda:N",
    )
    require(
        not (device and device.startswith("cuda")) or torch.cuda.is_available(),
        "detector.device",
        f"{device} was asked for but torch sees no GPU; pass detector.device=cpu",
    )
    return d


def train(cfg: dict, d: dict, out_dir: Path, fingerprint: str) -> dict:
    """Load the data, build or resume the model, run the steps, measure; the stage's summary."""
    device = d["device"] or default_device()
    model = initial_model(d, cfg["seed"], device)  # first: a bad detector.checkpoint fails before the data loads
    examples, skipped = load_examples(d["data"], d["image_root"], d["max_size"], d["max_images"])
    loop.record_skipped(out_dir, skipped, "detector.data")
    train_set, held_out = split(examples, d["val_fraction"])
    log.info(
        "detector: %d training images, %d held out, %d boxes",
        len(train_set),
        len(held_out),
        sum(len(e["boxes"]) for e in examples),
    )
    optimizer = make_optimizer(model, d)
    step = loop.resume(out_dir, model, optimizer, fingerprint, device)
    step = train_loop(model, optimizer, train_set, d, cfg["seed"], step, out_dir, fingerprint, device, progress(cfg))
    final = out_dir / "model.pt"
    save_detector(model, d["variant"], build_settings(d), final)
    metrics = {**box_metrics(model.eval(), held_out), "steps": step, "variant": d["variant"]}
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


def train_loop(model, optimizer, examples, d, seed, step, out_dir, fingerprint, device, show: bool) -> int:
    """Optimizer steps from `step` to d['steps'] (train.loop: checkpoints and the loss log along the way)."""
    model.train()
    run = {"desc": "detector", "progress": show, "postfix": ("loss",)}
    one_step = lambda step: train_step(model, optimizer, examples, d, seed, step, device)  # noqa: E731
    return loop.run_steps(model, optimizer, d, step, one_step, out_dir, fingerprint, run)
