"""The train stage: train or fine-tune SAM on collected masks, with atomic resumable checkpoints.

output.dir gets checkpoints/last.pt (model, optimizer, step; rewritten every checkpoint_every steps),
model.pt (the final weights as an fp16 state dict: pass it as model.checkpoint), loss_log.jsonl, and
skipped.jsonl (the images and annotations of train.data left out, each with its reason).
Rerunning the same command continues from checkpoints/last.pt. Step `n` samples its batch and prompts
from seed (seed, n), so a resumed run follows the same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_engine.errors import ConfigError, check_bool, check_choice, check_int, check_number, check_path, require
from data_engine.io.atomic import atomic_path, write_text_atomic
from data_engine.model.build import build_sam, default_device, read_state, seeded_sam
from data_engine.runtime import runs
from data_engine.train.data import batch, load_sources
from data_engine.train.recipe import batch_loss, recipe_of

log = logging.getLogger(__name__)

POSITIVE_INTS = ("steps", "images_per_step", "masks_per_image", "checkpoint_every")


def run(cfg: dict) -> dict:
    """Train for train.steps optimizer steps (continuing an earlier run in the same output.dir)."""
    t = check(cfg["train"])
    out_dir = Path(cfg["output"]["dir"])
    record = runs.prepare_output(out_dir, cfg, {"data": [str(Path(p).expanduser().resolve()) for p in t["data"]]})
    with torch_settings(t["num_threads"], t["deterministic"]):
        return train(cfg, t, out_dir, record["fingerprint"])


@contextmanager
def torch_settings(num_threads: int | None, deterministic: bool):
    """Torch's thread count, denormal flushing and deterministic kernels for the run; each is
    process-wide, so each is restored afterwards."""
    with ExitStack() as restore:
        restore.callback(torch.set_num_threads, torch.get_num_threads())
        if num_threads:
            torch.set_num_threads(num_threads)
        # Denormal floats slow CPU arithmetic (16% of a tiny-model step, measured); flushing them to zero
        # changes no loss figure at training precision. Torch has no getter for it: restore its default (off)
        restore.callback(torch.set_flush_denormal, False)
        torch.set_flush_denormal(True)
        if deterministic:
            # With 2+ threads the backward of the relative-position lookup (an accumulating index_put)
            # adds in a varying order, so two runs of one command drift apart; torch's deterministic
            # kernels fix the order. cuBLAS needs a fixed workspace for it; ops without a deterministic
            # GPU kernel warn instead of failing.
            restore.callback(
                torch.use_deterministic_algorithms,
                torch.are_deterministic_algorithms_enabled(),
                warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            )
            torch.use_deterministic_algorithms(True, warn_only=True)
            if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
                restore.callback(os.environ.pop, "CUBLAS_WORKSPACE_CONFIG", None)
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        yield


def train(cfg: dict, t: dict, out_dir: Path, fingerprint: str) -> dict:
    """Build the model, load the data, run the steps, write model.pt; the stage's summary."""
    device = cfg["model"]["device"] or default_device()
    sam = initial_model(cfg, device)
    examples, skipped = load_sources(t["data"], t["image_root"], sam.image_encoder.img_size, t["max_images"])
    record_skipped(out_dir, skipped)
    log.info("training on %d images with %d masks", len(examples), sum(len(e["masks"]) for e in examples))
    optimizer = make_optimizer(sam, t)
    step = resume(out_dir, sam, optimizer, fingerprint)
    step = train_loop(
        sam, optimizer, examples, t, cfg["seed"], step, out_dir, fingerprint, cfg["runtime"].get("progress", True)
    )
    final = out_dir / "model.pt"
    save_atomic({k: v.half() if v.is_floating_point() else v for k, v in sam.state_dict().items()}, final)
    return {
        "output": str(out_dir),
        "model": str(final),
        "steps": step,
        "images": len(examples),
        "masks": sum(len(e["masks"]) for e in examples),
        "images_skipped": sum("annotation" not in r for r in skipped),
        "annotations_skipped": sum("annotation" in r for r in skipped),
        "masks_too_small": sum(e["small_masks"] for e in examples),
        "last_loss": last_logged(out_dir),
    }


def record_skipped(out_dir: Path, skipped: list[dict]) -> None:
    """skipped.jsonl: one row per image or annotation of train.data left out of training, with its reason."""
    write_text_atomic("".join(json.dumps(row) + "\n" for row in skipped), out_dir / "skipped.jsonl")
    if skipped:
        log.warning(
            "%d images or annotations of train.data left out of training; reasons in %s",
            len(skipped),
            out_dir / "skipped.jsonl",
        )


def check(t: dict) -> dict:
    """Stage settings, or a ConfigError naming the key and what to do."""
    require(
        bool(t["data"]),
        "train.data",
        "give one or more data-engine output folders or COCO .json files, e.g. train.data=[out/synth]",
    )
    for path in t["data"]:
        require(Path(path).expanduser().exists(), "train.data", f"{path} does not exist")
    for key in POSITIVE_INTS:
        check_int(t, f"train.{key}", 1)
    check_int(t, "train.correction_clicks", 0)
    check_int(t, "train.warmup_steps", 0)
    check_int(t, "train.num_threads", 1, nullable=True)
    check_int(t, "train.max_images", 1, nullable=True)
    check_choice(t, "train.init", ("pretrained", "scratch", "partial"))
    check_choice(t, "train.iou_target", ("drawn", "containing"))
    for key in ("box_prob", "coarse_mask_prob"):
        check_number(t, f"train.{key}", 0, 1)
    check_number(t, "train.area_power")
    for key in ("lr", "weight_decay", "grad_clip", "focal_weight", "dice_weight", "iou_weight"):
        check_number(t, f"train.{key}", 0)
    for key in ("deterministic", "supervise_all_iou", "freeze_image_encoder"):
        check_bool(t, f"train.{key}")
    check_path(t, "train.image_root", nullable=True)
    return t


def initial_model(cfg: dict, device: str):
    """The model group's weights (pretrained), seeded random weights (scratch), or seeded weights
    overwritten by every tensor of model.checkpoint that fits (partial: growing an architecture), in
    train mode."""
    m, t = cfg["model"], cfg["train"]
    if t["init"] == "scratch":
        sam = seeded_sam(m["variant"], cfg["seed"]).to(device)
    elif t["init"] == "partial":
        sam = seeded_sam(m["variant"], cfg["seed"]).to(device)
        copy_fitting(sam, m["checkpoint"], m["variant"])
    else:
        sam = build_sam(m["variant"], m["checkpoint"], device, m["download"], m["cache_dir"])
    sam.train()
    if t["freeze_image_encoder"]:
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


def make_optimizer(sam, t: dict) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and position embeddings."""
    params = [(n, p) for n, p in sam.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "pos" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "pos" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": rest, "weight_decay": 0.0}], lr=t["lr"]
    )


def learning_rate(step: int, t: dict) -> float:
    """Linear warmup to lr, then cosine decay to 1% of lr at the last step."""
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    progress = (step - t["warmup_steps"]) / max(t["steps"] - t["warmup_steps"], 1)
    return t["lr"] * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_loop(
    sam, optimizer, examples, t: dict, seed: int, step: int, out_dir: Path, fingerprint: str, progress: bool
) -> int:
    """Optimizer steps from `step` to t['steps']; checkpoints and the loss log along the way."""
    bar = tqdm(total=t["steps"], initial=step, desc="train", disable=not progress)
    size = sam.image_encoder.img_size
    recipe = recipe_of(t)
    while step < t["steps"]:
        start = time.time()
        # Batch and prompts of this step come from (seed, step) only: resuming replays the same data
        rng = np.random.default_rng([seed, step])
        generator = torch.Generator(device=sam.device).manual_seed(int(rng.integers(1 << 62)))
        images, masks, *contexts = batch(
            examples,
            rng,
            t["images_per_step"],
            t["masks_per_image"],
            size,
            t["area_power"],
            context=t["iou_target"] == "containing",
        )
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, t)
        loss, stats = batch_loss(
            sam, images, masks, generator, recipe, not t["freeze_image_encoder"], contexts[0] if contexts else None
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(sam.parameters(), t["grad_clip"])
        optimizer.step()
        step += 1
        append_log(
            out_dir,
            {
                "step": step,
                "lr": learning_rate(step - 1, t),
                "seconds": round(time.time() - start, 3),
                **{k: round(v, 5) for k, v in stats.items()},
            },
        )
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", iou=f"{stats['iou']:.3f}")
        if step % t["checkpoint_every"] == 0 or step == t["steps"]:
            save_atomic(
                {
                    "model": sam.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "fingerprint": fingerprint,
                },
                out_dir / "checkpoints" / "last.pt",
            )
    bar.close()
    return step


def resume(out_dir: Path, sam, optimizer, fingerprint: str) -> int:
    """Load checkpoints/last.pt of this same run, if any; trim the loss log to its step."""
    path = out_dir / "checkpoints" / "last.pt"
    if not path.exists():
        trim_log(out_dir, 0)
        return 0
    state = torch.load(path, map_location=sam.device, weights_only=True)
    if state.get("fingerprint") != fingerprint:
        log.warning("%s belongs to a run of other settings; starting afresh", path)
        trim_log(out_dir, 0)
        return 0
    sam.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    trim_log(out_dir, state["step"])
    log.info("resuming from %s at step %d", path, state["step"])
    return int(state["step"])


def save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def append_log(out_dir: Path, row: dict) -> None:
    with open(out_dir / "loss_log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def trim_log(out_dir: Path, step: int) -> None:
    """Keep only the log rows of steps the checkpoint holds (a crash may have logged more)."""
    path = out_dir / "loss_log.jsonl"
    if not path.exists():
        return
    rows = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    write_text_atomic("".join(r + "\n" for r in rows), path)


def last_logged(out_dir: Path) -> dict | None:
    path = out_dir / "loss_log.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else None
