"""The detector stage: train a class-agnostic box detector on the masks of data-engine outputs or COCO
files, with atomic resumable checkpoints, and measure it on a held-out split.

output.dir gets checkpoints/last.pt (model, optimizer, step; rewritten every checkpoint_every steps),
model.pt (the final detector: pass it as detector.checkpoint to stage=semi), metrics.json (box AP and
AR on the held-out images), loss_log.jsonl, and skipped.jsonl (the images and annotations of
detector.data left out, each with its reason). Rerunning the same command continues from
checkpoints/last.pt; step `n` draws its batch from (seed, n), so a resumed run replays the same data.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from data_engine.detector.data import load_examples, split
from data_engine.detector.evaluate import box_metrics
from data_engine.detector.model import VARIANTS, save_detector
from data_engine.detector.train import build_settings, initial_model, make_optimizer, train_step
from data_engine.errors import ConfigError
from data_engine.io.atomic import write_json_atomic, write_text_atomic
from data_engine.model.build import default_device
from data_engine.runtime import runs
from data_engine.stages.train import append_log, last_logged, learning_rate, save_atomic, torch_settings, trim_log

log = logging.getLogger(__name__)

POSITIVE_INTS = ("steps", "images_per_step", "checkpoint_every", "min_size", "max_size", "box_detections_per_img")


def run(cfg: dict) -> dict:
    """Train for detector.steps optimizer steps (continuing an earlier run in the same output.dir)."""
    d = check(cfg["detector"])
    out_dir = Path(cfg["output"]["dir"])
    record = runs.prepare_output(out_dir, cfg, {"data": [str(Path(p).expanduser().resolve()) for p in d["data"]]})
    with torch_settings(d["num_threads"], d["deterministic"]):
        return train(cfg, d, out_dir, record["fingerprint"])


def check(d: dict) -> dict:
    """The `detector` group's settings, or a ConfigError naming the key and what to do."""
    if d["variant"] not in VARIANTS:
        raise ConfigError(f"detector.variant: unknown variant {d['variant']!r}; choose from {sorted(VARIANTS)}")
    if d["checkpoint"] and not Path(d["checkpoint"]).expanduser().is_file():
        raise ConfigError(f"detector.checkpoint: {d['checkpoint']} does not exist; give a detector checkpoint file")
    if not d["data"] or not isinstance(d["data"], list) or not all(isinstance(p, str) for p in d["data"]):
        raise ConfigError(
            "detector.data: give one or more data-engine output folders or COCO .json files, "
            f"e.g. 'detector.data=[out/synth]'; got {d['data']!r}"
        )
    for path in d["data"]:
        if not Path(path).expanduser().exists():
            raise ConfigError(f"detector.data: {path} does not exist")
    for key in POSITIVE_INTS:
        if not is_int(d[key]) or d[key] < 1:
            raise ConfigError(f"detector.{key}: must be a positive integer, got {d[key]!r}")
    if d["min_size"] > d["max_size"]:
        raise ConfigError(f"detector.min_size: must not exceed max_size ({d['max_size']}), got {d['min_size']}")
    for key in ("warmup_steps",):
        if not is_int(d[key]) or d[key] < 0:
            raise ConfigError(f"detector.{key}: must be an integer >= 0, got {d[key]!r}")
    for key in ("lr", "weight_decay", "grad_clip"):
        if not is_number(d[key]) or d[key] < 0:
            raise ConfigError(f"detector.{key}: must be a number >= 0, got {d[key]!r}")
    for key in ("val_fraction", "box_nms_thresh"):
        if not is_number(d[key]) or not 0 <= d[key] <= 1:
            raise ConfigError(f"detector.{key}: must lie in [0, 1], got {d[key]!r}")
    if d["optimizer"] not in ("adamw", "sgd"):
        raise ConfigError(f"detector.optimizer: must be adamw or sgd, got {d['optimizer']!r}")
    for key in ("hflip", "deterministic"):
        if not isinstance(d[key], bool):
            raise ConfigError(f"detector.{key}: must be true or false, got {d[key]!r}")
    if d["max_images"] is not None and (not is_int(d["max_images"]) or d["max_images"] < 1):
        raise ConfigError(f"detector.max_images: must be null or a positive integer, got {d['max_images']!r}")
    if d["num_threads"] is not None and (not is_int(d["num_threads"]) or d["num_threads"] < 1):
        raise ConfigError(f"detector.num_threads: must be null or a positive integer, got {d['num_threads']!r}")
    device = d["device"]
    if not (device in (None, "cpu", "cuda") or str(device).startswith("cuda:")):
        raise ConfigError(f"detector.device: {device!r} is not null, cpu, cuda or cuda:N")
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"detector.device: {device} was asked for but torch sees no GPU; pass detector.device=cpu")
    return d


def train(cfg: dict, d: dict, out_dir: Path, fingerprint: str) -> dict:
    """Load the data, build or resume the model, run the steps, measure; the stage's summary."""
    device = d["device"] or default_device()
    model = initial_model(d, cfg["seed"], device)  # first: a bad detector.checkpoint fails before the data loads
    examples, skipped = load_examples(d["data"], d["image_root"], d["max_size"], d["max_images"])
    record_skipped(out_dir, skipped)
    train_set, held_out = split(examples, d["val_fraction"])
    log.info(
        "detector: %d training images, %d held out, %d boxes",
        len(train_set),
        len(held_out),
        sum(len(e["boxes"]) for e in examples),
    )
    optimizer = make_optimizer(model, d)
    step = resume(out_dir, model, optimizer, fingerprint, device)
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
        "last_loss": last_logged(out_dir),
    }


def progress(cfg: dict) -> bool:
    return cfg["runtime"].get("progress", True)


def record_skipped(out_dir: Path, skipped: list[dict]) -> None:
    """skipped.jsonl: one row per image or annotation of detector.data left out, with its reason."""
    write_text_atomic("".join(json.dumps(row) + "\n" for row in skipped), out_dir / "skipped.jsonl")
    if skipped:
        log.warning("%d images or annotations of detector.data left out; reasons in %s", len(skipped), out_dir)


def train_loop(model, optimizer, examples, d, seed, step, out_dir, fingerprint, device, show: bool) -> int:
    """Optimizer steps from `step` to d['steps']; checkpoints and the loss log along the way."""
    bar = tqdm(total=d["steps"], initial=step, desc="detector", disable=not show)
    model.train()
    while step < d["steps"]:
        start = time.time()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, d)
        stats = train_step(model, optimizer, examples, d, seed, step, device)
        step += 1
        append_log(
            out_dir,
            {
                "step": step,
                "lr": learning_rate(step - 1, d),
                "seconds": round(time.time() - start, 3),
                **{k: round(v, 5) for k, v in stats.items()},
            },
        )
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.3f}")
        if step % d["checkpoint_every"] == 0 or step == d["steps"]:
            checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            save_atomic({**checkpoint, "fingerprint": fingerprint}, out_dir / "checkpoints" / "last.pt")
    bar.close()
    return step


def resume(out_dir: Path, model, optimizer, fingerprint: str, device) -> int:
    """Load checkpoints/last.pt of this same run, if any; trim the loss log to its step."""
    path = out_dir / "checkpoints" / "last.pt"
    state = torch.load(path, map_location=device, weights_only=True) if path.exists() else None
    if state is None or state.get("fingerprint") != fingerprint:
        if state is not None:
            log.warning("%s belongs to a run of other settings; starting afresh", path)
        trim_log(out_dir, 0)
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    trim_log(out_dir, state["step"])
    log.info("resuming from %s at step %d", path, state["step"])
    return int(state["step"])


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
