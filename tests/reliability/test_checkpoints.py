"""Hostile checkpoints (issue 42): non-finite weights and code-running pickles are refused, naming the file."""

from __future__ import annotations

import subprocess
import sys

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
