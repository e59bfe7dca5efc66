"""The resumable optimizer loop both trainers share (SAM's train stage, the detector stage).

A step `n` draws its batch from (seed, n) alone, so a run resumed from checkpoints/last.pt follows the
same data as an uninterrupted one. output.dir gets loss_log.jsonl (one row per step), checkpoints/last.pt
(model, optimizer, step, the run's fingerprint; written atomically every checkpoint_every steps) and
skipped.jsonl (what the data readers left out, with the reason).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from data_engine.errors import UserError
from data_engine.io.atomic import atomic_path, write_text_atomic
from data_engine.runtime import runs

log = logging.getLogger(__name__)


def run_training(cfg: dict, settings, train: Callable[[Path, str], dict]) -> dict:
    """Create or resume output.dir (its run record keyed on the data paths), then `train(out_dir,
    fingerprint)` under the torch settings of `settings` (the train or detector section); the trainer's
    summary."""
    out_dir = Path(cfg["output"]["dir"])
    data = [str(Path(p).expanduser().resolve()) for p in settings.data]
    record = runs.prepare_output(out_dir, cfg, {"data": data})
    with torch_settings(settings.num_threads, settings.deterministic):
        return train(out_dir, record["fingerprint"])


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


def learning_rate(step: int, settings) -> float:
    """Linear warmup to lr, then cosine decay to 1% of lr at the last step (settings: lr, warmup_steps, steps)."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(settings.steps - settings.warmup_steps, 1)
    return settings.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def run_steps(
    model, optimizer, settings, step: int, one_step: Callable[[int], dict], out_dir: Path, fingerprint: str, run: dict
) -> int:
    """Optimizer steps from `step` to settings.steps (the train or detector section): set the learning
    rate, `one_step(step)` -> its stats, log them, checkpoint on schedule. run: {"desc", "progress",
    "postfix": stats keys shown on the bar}."""
    bar = tqdm(total=settings.steps, initial=step, desc=run["desc"], disable=not run["progress"])
    while step < settings.steps:
        start = time.time()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        stats = one_step(step)
        step += 1
        check_loss(stats["loss"], step, run["desc"])
        row = {"step": step, "lr": learning_rate(step - 1, settings), "seconds": round(time.time() - start, 3)}
        append_log(out_dir, {**row, **{k: round(v, 5) for k, v in stats.items()}})
        bar.update(1)
        bar.set_postfix({k: f"{stats[k]:.3f}" for k in run["postfix"]})
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            save_checkpoint({**state, "fingerprint": fingerprint}, out_dir / "checkpoints" / "last.pt")
    bar.close()
    return step


class TrainingDiverged(UserError, FloatingPointError):
    """A training step's loss is NaN or infinite: the run stops before writing a model."""


def check_loss(loss: float, step: int, section: str) -> None:
    """Stop at a non-finite loss: every later step, and the model written at the end, would be NaN."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"training diverged: the loss of step {step} is {loss}, so no model was written; "
            f"lower {section}.lr, or check the starting checkpoint and {section}.data"
        )


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


def save_checkpoint(obj, path: Path) -> None:
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


def record_skipped(out_dir: Path, skipped: list[dict], key: str) -> None:
    """skipped.jsonl: one row per image or annotation of `key` (e.g. train.data) left out, with its reason."""
    write_text_atomic("".join(json.dumps(row) + "\n" for row in skipped), out_dir / "skipped.jsonl")
    if skipped:
        log.warning(
            "%d images or annotations of %s left out; reasons in %s", len(skipped), key, out_dir / "skipped.jsonl"
        )
