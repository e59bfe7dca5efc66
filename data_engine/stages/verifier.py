"""The verifier stage: train the mask verifier on annotators' decisions (semi_merge outputs) and audit
pairs, with atomic resumable checkpoints, and measure it on images held out by file name.

output.dir gets checkpoints/last.pt (rewritten every checkpoint_every steps), model.pt (pass it as
verifier.checkpoint to stage=auto or stage=semi), metrics.json (ROC AUC, what each route would hold at
verifier.accept and verifier.reject, and the calibration, on the held-out masks; the same on the
training masks), loss_log.jsonl and skipped.jsonl (images left out, with the reason). Rerunning the
same command continues from checkpoints/last.pt.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch

from data_engine.errors import require
from data_engine.io.atomic import write_json_atomic
from data_engine.model.build import default_device
from data_engine.schema import absolute
from data_engine.train import loop
from data_engine.verifier.data import featurize, held_out, load_examples, source_kind, subset
from data_engine.verifier.figures import calibration, metrics
from data_engine.verifier.model import save_verifier
from data_engine.verifier.score import predict
from data_engine.verifier.settings import VerifierTraining
from data_engine.verifier.train import initial_model, make_optimizer, train_step

log = logging.getLogger(__name__)


def run(cfg: dict, settings: VerifierTraining) -> dict:
    """Train for verifier.steps optimizer steps (continuing an earlier run in the same output.dir)."""
    settings = absolute(settings, ("checkpoint",))
    for path in settings.data:
        source_kind(Path(path).expanduser())  # a folder of another kind is refused before output.dir is made
    return loop.run_training(cfg, settings, partial(train, cfg, settings))


def train(cfg: dict, settings: VerifierTraining, out_dir: Path, fingerprint: str) -> dict:
    """Load the labelled masks, build or resume the model, run the steps, measure; the stage's summary."""
    device = settings.device or default_device()
    model = initial_model(settings, cfg["seed"], device)  # first: a bad verifier.checkpoint fails before the data
    data = [str(Path(p).expanduser().resolve()) for p in settings.data]
    examples = load_examples(data, settings.label_iou)
    size, context = model.settings["crop_size"], model.settings["context"]
    arrays, skipped = featurize(examples, size, context)
    loop.record_skipped(out_dir, skipped, "verifier.data")
    held = held_out(examples, settings.val_fraction)[arrays["image"]]  # [N masks]
    train_set, held_set = subset(arrays, ~held), subset(arrays, held)
    require(
        len(train_set["labels"]) > 0,
        "verifier.data",
        f"no labelled mask to train on in {data} (after holding out {int(held.sum())}); give more outputs",
    )
    log.info("verifier: %d masks to train on, %d held out", len(train_set["labels"]), len(held_set["labels"]))
    if not settings.checkpoint:
        model.fit_scalars(torch.as_tensor(train_set["scalars"], device=device))
    optimizer = make_optimizer(model, settings)
    step = loop.resume(out_dir, model, optimizer, fingerprint, device)
    one_step = lambda n: train_step(model, optimizer, train_set, settings, cfg["seed"], n, device)  # noqa: E731
    show = {"desc": "verifier", "progress": cfg["runtime"].get("progress", True), "postfix": ("loss",)}
    step = loop.run_steps(model, optimizer, settings, step, one_step, out_dir, fingerprint, show)
    save_verifier(model, out_dir / "model.pt")
    figures = {
        "held_out": measured(model, held_set, settings, device),
        "train": measured(model, train_set, settings, device),
        "images": {"train": count_images(train_set), "held_out": count_images(held_set)},
        "steps": step,
    }
    write_json_atomic(figures, out_dir / "metrics.json")
    return {
        "output": str(out_dir),
        "model": str(out_dir / "model.pt"),
        "steps": step,
        "train_masks": len(train_set["labels"]),
        "held_out_masks": len(held_set["labels"]),
        "images_skipped": len(skipped),
        "held_out": {k: figures["held_out"][k] for k in ("roc_auc", "masks", "acceptable")},
        "last_loss": loop.last_logged(out_dir),
    }


def measured(model, arrays: dict, settings: VerifierTraining, device) -> dict:
    scores = predict(model, arrays["crops"], arrays["scalars"], device)
    return {
        **metrics(scores, arrays["labels"], settings.accept, settings.reject),
        "calibration": calibration(scores, arrays["labels"]),
    }


def count_images(arrays: dict) -> int:
    return len(np.unique(arrays["image"]))
