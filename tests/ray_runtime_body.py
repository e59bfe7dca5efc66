"""Ray runtime: shards across workers, a worker killed mid-shard is retried, not lost."""

import json
import os
from pathlib import Path

import pytest
from test_auto_stage import write_images

from data_engine.io.dataset import read_images
from data_engine.stages import run_stage

pytestmark = pytest.mark.slow
RAY = ["runtime=local", "runtime.cpus_per_worker=1", "runtime.progress=false"]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    import ray

    yield
    ray.shutdown()


def test_killed_worker_shard_is_retried_on_ray(make_cfg, tmp_path):
    write_images(tmp_path / "in", 6)
    cfg = make_cfg(
        f"input.path={tmp_path / 'in'}",
        "input.shard_size=2",
        *RAY,
        "debug.crash_on_shard=shard-000000001",
        "runtime.max_retries=2",
    )
    summary = run_stage(cfg)
    out = Path(cfg["output"]["dir"])
    assert (out / "_debug" / "crashed-shard-000000001").exists(), "the worker process did not die"
    assert summary["shards_failed"] == {}
    assert sorted(r["file_name"] for r in read_images(out).to_pylist()) == [f"img_{i:02d}.png" for i in range(6)]
    # Each shard ran in a Ray worker process, not in the driver
    workers = [json.loads(p.read_text())["worker"] for p in sorted((out / "_done").rglob("*.json"))]
    assert len(workers) == 3 and all(w["pid"] != os.getpid() and w["device"] == "cpu" for w in workers)


def test_shard_fails_without_retries_and_a_rerun_finishes_it(make_cfg, tmp_path):
    write_images(tmp_path / "in", 4)
    cfg = make_cfg(
        f"input.path={tmp_path / 'in'}",
        "input.shard_size=2",
        *RAY,
        "debug.crash_on_shard=shard-000000000",
        "runtime.max_retries=0",
    )
    summary = run_stage(cfg)
    assert list(summary["shards_failed"]) == ["shard-000000000"]
    assert summary["images"] == 2  # only the other shard's images were written
    summary = run_stage(cfg)  # the crash fires once per output dir
    assert summary["shards_failed"] == {} and summary["images"] == 4
