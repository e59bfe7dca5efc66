"""Runtime faults: dead workers, failure reasons, a full disk, two drivers on one output (issue 42)."""

import pytest
from test_auto_stage import write_images

from data_engine.io.dataset import read_images
from data_engine.stages import run_stage

RAY = ["runtime=local", "runtime.cpus_per_worker=1", "runtime.progress=false"]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        # two workers; one dies once with no retry left
        ["debug.crash_on_shard=shard-00001", "runtime.max_retries=0", "runtime.num_workers=2"],
        # one worker; the shard kills it on every attempt
        ["debug.kill_on_shard=shard-00001", "runtime.max_retries=1", "runtime.num_workers=1"],
    ],
    ids=["dies-once-no-retries", "kills-every-attempt"],
)
def test_a_dead_worker_fails_only_its_own_shard(ray_session, make_cfg, tmp_path, fault):
    write_images(tmp_path / "in", 12)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=2", *RAY, *fault)
    summary = run_stage(cfg)
    assert list(summary["shards_failed"]) == ["shard-00001"]
    assert summary["shards_failed"]["shard-00001"].startswith("ActorDiedError: ")
    assert "\x1b[" not in summary["shards_failed"]["shard-00001"]
    names = sorted(r["file_name"] for r in read_images(cfg["output"]["dir"]).to_pylist())
    assert names == [f"img_{i:02d}.png" for i in range(12) if i not in (2, 3)]
