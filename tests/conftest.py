"""Shared fixtures: compose the real Hydra config and shrink it for tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from data_engine.config import compose

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Small settings every test starts from: a coarse grid, no crops, no progress bar, no overlays.
SMALL = [
    "runtime=serial",
    "runtime.progress=false",
    "output.overlays=0",
    "amg.points_per_side=8",
    "amg.crop_n_layers=0",
    "model.device=cpu",
]


def compose_cfg(overrides: list[str], tmp_path: Path | None = None, small: bool = True) -> dict:
    """The real config with `overrides`, resolved to a plain dict as the CLI hands it to stages."""
    extra = SMALL if small else []
    if tmp_path is not None:
        extra = extra + [f"output.dir={tmp_path / 'out'}"]
    return compose(extra + overrides)


@pytest.fixture
def one_thread():
    """One torch thread: on a small shared machine, far faster than threads competing for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_cfg(tmp_path):
    return lambda *overrides, small=True: compose_cfg(list(overrides), tmp_path, small)


@pytest.fixture(scope="module", autouse=True)
def fresh_ray_per_module():
    """A module that started Ray shuts it down, so the next module's runtime=local starts a Ray of its own
    (a long-lived session carried across modules made a later Ray Data run wait forever)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
