"""Hostile checkpoints: non-finite weights and code-running pickles are refused, naming the file."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from data_engine import build_sam
from data_engine.model import build as models
from data_engine.model.build import CheckpointError


def nan_checkpoint(path):
    state = models.seeded_sam("tiny").state_dict()
    key = next(k for k in state if state[k].is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, path)
    return path, len(state)


def test_nan_weights_are_refused_naming_the_file_and_the_count(tmp_path):
    path, total = nan_checkpoint(tmp_path / "diverged.pt")
    with pytest.raises(CheckpointError, match=rf"diverged\.pt holds non-finite weights .* in 1 of {total} tensors"):
        build_sam("tiny", checkpoint=path, device="cpu")


def test_stage_auto_refuses_a_nan_checkpoint_before_any_work(tmp_path):
    from test_auto_stage import write_images

    path, _ = nan_checkpoint(tmp_path / "diverged.pt")
    write_images(tmp_path / "in", 2)
    args = ["stage=auto", "model=tiny", f"model.checkpoint={path}", f"input.path={tmp_path / 'in'}"]
    args += [f"output.dir={tmp_path / 'out'}", "runtime=serial"]
    result = subprocess.run([sys.executable, "-m", "data_engine", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "diverged.pt holds non-finite weights" in result.stderr
    assert not list((tmp_path / "out").rglob("*.parquet"))


class Payload:
    """Unpickling this creates a file: what a checkpoint that runs code would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt.*could not be read"):
        build_sam("tiny", checkpoint=tmp_path / "evil.pt", device="cpu")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Detector checkpoints (stage 2) get the same checks, and training stops at a non-finite loss
# ----------------------------------------------------------------------------------------------

SETTINGS = {"min_size": 96, "max_size": 128}


def detector_file(path, **changes):
    """A seeded small detector checkpoint of save_detector, with `changes` to its saved dict."""
    from data_engine.detector.model import build_detector, save_detector

    torch.manual_seed(0)
    save_detector(build_detector("small", **SETTINGS), "small", SETTINGS, path)
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, **{k: v(saved) if callable(v) else v for k, v in changes.items()}}, path)
    return path


def all_nan(saved):
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in saved["model"].items()}


DAMAGED_DETECTORS = {
    "nan-weights": ({"model": all_nan}, r"holds non-finite weights \(NaN or infinity\) in \d+ of \d+ tensors"),
    "settings-list": ({"settings": [96, 128]}, "is damaged: its settings are a list, not a mapping"),
    "model-list": ({"model": [1, 2]}, "is damaged: its model is a list, not a state dict"),
    "variant-list": ({"variant": ["small"]}, r"is damaged: its variant \"\['small'\]\" is not one of"),
    "huge-min-size": (
        {"settings": {"min_size": 60000, "max_size": 60000}},
        r"is damaged: settings min_size: must be an integer in \[1, 4096\], got 60000",
    ),
    "negative-min-size": (
        {"settings": {"min_size": -5, "max_size": 128}},
        r"is damaged: settings min_size: must be an integer in \[1, 4096\], got -5",
    ),
    "unknown-setting": (
        {"settings": {**SETTINGS, "min_sise": 96}},
        "is damaged: settings min_sise: not a detector setting",
    ),
}


@pytest.mark.parametrize("changes, message", DAMAGED_DETECTORS.values(), ids=DAMAGED_DETECTORS.keys())
def test_a_damaged_detector_checkpoint_is_refused_naming_the_file(tmp_path, changes, message):
    from data_engine.detector.model import load_detector, read_start_weights
    from data_engine.errors import UserError

    path = detector_file(tmp_path / "det.pt", **changes)
    for read in (lambda: load_detector(path), lambda: read_start_weights(path, "small")):  # stage=semi, =detector
        with pytest.raises(UserError, match=rf"det\.pt {message}") as err:
            read()
        assert "\n" not in str(err.value)


def test_the_detector_settings_of_the_config_get_the_same_bounds(make_cfg, tmp_path):
    from data_engine.config import validate
    from data_engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^detector\.min_size: must be an integer in \[1, 4096\], got 60000"):
        validate(make_cfg("stage=detector", f"detector.data=[{tmp_path}]", "detector.min_size=60000"))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "data_engine", *args], capture_output=True, text=True, timeout=300)


def assert_one_line(result, text):
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and text in result.stderr and "Traceback" not in result.stderr


def test_stage_semi_and_stage_detector_refuse_a_nan_detector_before_any_work(tmp_path):
    from test_auto_stage import write_images

    path = detector_file(tmp_path / "diverged.pt", model=all_nan)
    write_images(tmp_path / "in", 1)
    common = [f"detector.checkpoint={path}", "runtime=serial", "model=tiny"]
    semi = cli("stage=semi", *common, f"input.path={tmp_path / 'in'}", f"output.dir={tmp_path / 'semi'}")
    assert_one_line(semi, "diverged.pt holds non-finite weights")
    assert not list((tmp_path / "semi").rglob("*.parquet"))
    detector = cli("stage=detector", *common, f"detector.data=[{tmp_path / 'in'}]", f"output.dir={tmp_path / 'det'}")
    assert_one_line(detector, "diverged.pt holds non-finite weights")
    assert not (tmp_path / "det" / "model.pt").exists()


def test_training_stops_at_a_non_finite_loss_without_writing_past_it(tmp_path):
    from data_engine.train import loop

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    settings = SimpleNamespace(steps=5, warmup_steps=0, lr=0.1, checkpoint_every=1)
    losses = [1.0, 0.5, float("nan"), 0.2, 0.1]
    run = {"desc": "detector", "progress": False, "postfix": ("loss",)}
    with pytest.raises(loop.TrainingDiverged, match=r"^training diverged: the loss of step 3 is nan, so no model"):
        loop.run_steps(model, optimizer, settings, 0, lambda n: {"loss": losses[n]}, tmp_path, "fp", run)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    assert [row["step"] for row in map(json.loads, (tmp_path / "loss_log.jsonl").read_text().splitlines())] == [1, 2]


def test_stage_detector_stops_at_a_nan_loss_with_one_line_and_no_model(tmp_path, monkeypatch, make_cfg):
    from semi_data import make_scenes

    from data_engine.stages import detector as detector_stage
    from data_engine.stages import run_stage
    from data_engine.train.loop import TrainingDiverged

    scenes = make_scenes(tmp_path / "scenes", 2)
    monkeypatch.setattr(detector_stage, "train_step", lambda *args: {"loss": float("nan")})
    out = tmp_path / "det"
    args = ["detector.min_size=96", "detector.max_size=96", "detector.steps=3", f"detector.data=[{scenes}]"]
    with pytest.raises(TrainingDiverged, match="lower detector.lr"):
        run_stage(make_cfg("stage=detector", *args, f"output.dir={out}"))
    assert not (out / "model.pt").exists() and not (out / "checkpoints" / "last.pt").exists()
