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

from data_engine.errors import check_bool, check_int, check_number, require
from data_engine.io.atomic import write_json_atomic
from data_engine.model.build import default_device
from data_engine.train import loop
from data_engine.verifier.data import featurize, held_out, load_examples, source_kind, subset
from data_engine.verifier.figures import calibration, metrics
from data_engine.verifier.model import save_verifier
from data_engine.verifier.score import check_routing, predict
from data_engine.verifier.train import initial_model, make_optimizer, train_step

log = logging.getLogger(__name__)


def run(cfg: dict) -> dict:
    """Train for verifier.steps optimizer steps (continuing an earlier run in the same output.dir)."""
    v = check(cfg["verifier"])
    for path in v["data"]:
        source_kind(Path(path))  # before output.dir is made
    return loop.run_training(cfg, v, partial(train, cfg, v))


def check(v: dict) -> dict:
    """The verifier section, or a ConfigError naming the key and what to do."""
    check_routing(v)
    require(
        bool(v["data"]) and isinstance(v["data"], list) and all(isinstance(p, str) for p in v["data"]),
        "verifier.data",
        f"give stage=semi_merge or stage=audit output folders, e.g. 'verifier.data=[out/merged]'; got {v['data']!r}",
    )
    for path in v["data"]:
        require(Path(path).expanduser().is_dir(), "verifier.data", f"{path} is not a folder")
    require(
        not v["checkpoint"] or Path(v["checkpoint"]).expanduser().is_file(),
        "verifier.checkpoint",
        f"{v['checkpoint']} does not exist; give a model.pt written by stage=verifier",
    )
    for key, low in (("crop_size", 8), ("width", 0), ("steps", 1), ("batch_size", 1), ("checkpoint_every", 1)):
        check_int(v, f"verifier.{key}", low)
    require(v["width"] % 8 == 0, "verifier.width", f"must be a multiple of 8 (0: no convolutions), got {v['width']}")
    check_int(v, "verifier.warmup_steps", 0)
    check_int(v, "verifier.num_threads", 1, nullable=True)
    check_number(v, "verifier.label_iou", 0, 1)
    check_number(v, "verifier.context", 0, 4)
    check_number(v, "verifier.val_fraction", 0, 0.9)
    for key in ("lr", "weight_decay"):
        check_number(v, f"verifier.{key}", 0)
    check_bool(v, "verifier.deterministic")
    require(
        v["device"] in (None, "cpu", "cuda") or str(v["device"]).startswith("cuda:"),
        "verifier.device",
        f"{v['device']!r} is not null, cpu, cuda or cuda:N",
    )
    return {**v, "data": [str(Path(p).expanduser().resolve()) for p in v["data"]]}


def train(cfg: dict, v: dict, out_dir: Path, fingerprint: str) -> dict:
    """Load the labelled masks, build or resume the model, run the steps, measure; the stage's summary."""
    device = v["device"] or default_device()
    model = initial_model(v, cfg["seed"], device)  # first: a bad verifier.checkpoint fails before the data loads
    examples = load_examples(v["data"], v["label_iou"])
    size, context = model.settings["crop_size"], model.settings["context"]
    arrays, skipped = featurize(examples, size, context, cfg["input"]["max_pixels"])
    loop.record_skipped(out_dir, skipped, "verifier.data")
    held = held_out(examples, v["val_fraction"])[arrays["image"]]  # [N masks]
    train_set, held_set = subset(arrays, ~held), subset(arrays, held)
    require(
        len(train_set["labels"]) > 0,
        "verifier.data",
        f"no labelled mask to train on in {v['data']} (after holding out {int(held.sum())}); give more outputs",
    )
    log.info("verifier: %d masks to train on, %d held out", len(train_set["labels"]), len(held_set["labels"]))
    if not v["checkpoint"]:
        model.fit_scalars(torch.as_tensor(train_set["scalars"], device=device))
    optimizer = make_optimizer(model, v)
    step = loop.resume(out_dir, model, optimizer, fingerprint, device)
    one_step = lambda n: train_step(model, optimizer, train_set, v, cfg["seed"], n, device)  # noqa: E731
    show = {"desc": "verifier", "progress": cfg["runtime"].get("progress", True), "postfix": ("loss",)}
    step = loop.run_steps(model, optimizer, v, step, one_step, out_dir, fingerprint, show)
    save_verifier(model, out_dir / "model.pt")
    figures = {
        "held_out": measured(model, held_set, v, device),
        "train": measured(model, train_set, v, device),
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


def measured(model, arrays: dict, v: dict, device) -> dict:
    scores = predict(model, arrays["crops"], arrays["scalars"], device)
    return {
        **metrics(scores, arrays["labels"], v["accept"], v["reject"]),
        "calibration": calibration(scores, arrays["labels"]),
    }


def count_images(arrays: dict) -> int:
    return len(np.unique(arrays["image"]))
