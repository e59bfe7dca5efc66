"""Runtime faults: dead workers, failure reasons, a full disk,, two drivers on one output."""

import errno
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_auto_stage import write_images

from data_engine.amg.generator import MaskGenerator
from data_engine.io.dataset import read_images
from data_engine.runtime import runs
from data_engine.runtime.lock import OutputLocked
from data_engine.runtime.reasons import reason
from data_engine.runtime.runs import OutputConflict, OutputFull
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
        ["debug.crash_on_shard=shard-000000001", "runtime.max_retries=0", "runtime.num_workers=2"],
        # one worker; the shard kills it on every attempt
        ["debug.kill_on_shard=shard-000000001", "runtime.max_retries=1", "runtime.num_workers=1"],
    ],
    ids=["dies-once-no-retries", "kills-every-attempt"],
)
def test_a_dead_worker_fails_only_its_own_shard(ray_session, make_cfg, tmp_path, fault):
    write_images(tmp_path / "in", 12)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=2", *RAY, *fault)
    summary = run_stage(cfg)
    assert list(summary["shards_failed"]) == ["shard-000000001"]
    assert summary["shards_failed"]["shard-000000001"].startswith("WorkerLost: ")
    assert "\x1b[" not in summary["shards_failed"]["shard-000000001"]
    names = sorted(r["file_name"] for r in read_images(cfg["output"]["dir"]).to_pylist())
    assert names == [f"img_{i:02d}.png" for i in range(12) if i not in (2, 3)]


HOLD = """
import sys, time
from data_engine.runtime.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_output_refuses_while_the_first_holds_it(make_cfg, tmp_path):
    write_images(tmp_path / "in", 1)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, cfg["output"]["dir"]], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=f"pid {holder.pid}.*wait for it to finish or choose another output.dir"):
            run_stage(cfg)
        assert not (Path(cfg["output"]["dir"]) / "images").exists()  # refused before any work
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_run_is_taken_over_and_released_after(make_cfg, tmp_path, caplog):
    write_images(tmp_path / "in", 1)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = Path(cfg["output"]["dir"]) / ".lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "started": "earlier"}))
    with caplog.at_level(logging.WARNING):
        summary = run_stage(cfg)
    assert summary["images_ok"] == 1
    assert f"pid {gone.pid}" in caplog.text and "gone" in caplog.text
    assert not lock.exists()


def test_the_lock_is_released_when_a_run_fails(make_cfg, tmp_path):
    write_images(tmp_path / "in", 1)
    run_stage(make_cfg(f"input.path={tmp_path / 'in'}"))
    with pytest.raises(OutputConflict):
        run_stage(make_cfg(f"input.path={tmp_path / 'in'}", "amg.box_nms_thresh=0.5"))
    assert not (Path(make_cfg()["output"]["dir"]) / ".lock").exists()


def test_a_ray_task_error_is_recorded_as_its_root_cause_on_one_plain_line():
    from ray.exceptions import RayTaskError

    cause = OSError(errno.ENOSPC, "No space left on device")
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nOSError: [Errno 28] No space left on device'
    err = RayTaskError("ShardActor.process", trace, cause, proctitle="ray::ShardActor.process()").as_instanceof_cause()
    assert "\x1b[" in str(err)  # what Ray gives: a coloured header line
    assert reason(err) == "OSError: [Errno 28] No space left on device"


def test_a_nearly_full_disk_fails_before_the_shard_is_computed(make_cfg, tmp_path, monkeypatch):
    write_images(tmp_path / "in", 2)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    generated = []
    monkeypatch.setattr(MaskGenerator, "generate", lambda self, image: generated.append(1))
    with pytest.raises(OutputFull, match=r"only 1.0 MiB free .* choose another output.dir"):
        run_stage(cfg)
    assert generated == []


def test_no_space_while_writing_a_shard_is_its_recorded_reason(make_cfg, tmp_path, monkeypatch):
    write_images(tmp_path / "in", 2)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_shard", full)
    summary = run_stage(cfg)
    why = summary["shards_failed"]["shard-000000000"]
    assert why.startswith("OutputFull: ") and "No space left on device" in why and "\n" not in why
    assert json.loads((Path(cfg["output"]["dir"]) / "summary.json").read_text())["shards_failed"] == {
        "shard-000000000": why
    }


def test_no_space_for_the_run_record_is_one_line_and_leaves_no_temporary_file(make_cfg, tmp_path, monkeypatch):
    write_images(tmp_path / "in", 1)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    real_write = Path.write_bytes

    def half_then_full(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(OutputFull, match="No space left on device"):
        run_stage(cfg)
    monkeypatch.undo()
    out = Path(cfg["output"]["dir"])
    # no run.json, no .run.json.<uuid>.tmp, lock released: the folder the run created is removed as empty
    assert not out.exists()


FULL_AT_START = """
import errno, os, runpy, sys

class Full:  # a disk with 0 bytes free: the lock file is created, writing its content fails
    def __init__(self, fd, *args, **kwargs):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

os.fdopen = Full
sys.argv = ["data-engine", *sys.argv[1:]]
runpy.run_module("data_engine", run_name="__main__")
"""


def test_a_full_disk_at_the_start_is_one_line_leaves_no_lock_and_a_rerun_works(tmp_path):
    out = tmp_path / "out"
    args = ["stage=synth", "synth.num_scenes=2", "synth.min_size=64", "synth.max_size=64", f"output.dir={out}"]
    args += ["runtime=serial", "log_level=WARNING"]
    full = subprocess.run([sys.executable, "-c", FULL_AT_START, *args], capture_output=True, text=True)
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert full.stderr.count("\n") == 1 and f"no space left for {out}" in full.stderr, full.stderr
    assert not (out / ".lock").exists()
    freed = subprocess.run([sys.executable, "-m", "data_engine", *args], capture_output=True, text=True)
    assert freed.returncode == 0, freed.stderr
    assert json.loads(freed.stdout)["images"] == 2 and not (out / ".lock").exists()


def test_a_rerun_with_nothing_to_do_leaves_the_output_folder_byte_for_byte(make_cfg):
    cfg = make_cfg("stage=synth", "synth.num_scenes=3", "synth.min_size=64", "synth.max_size=64")
    first = run_stage(cfg)
    out = Path(cfg["output"]["dir"])
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    time.sleep(0.05)  # a rewrite would have another modification time
    again = run_stage(cfg)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == {p: b for p, (b, _) in files.items()}
    for name in ("run.json", "summary.json"):  # not rewritten
        assert (out / name).stat().st_mtime_ns == files[out / name][1]
    assert json.loads((out / "summary.json").read_text())["seconds"] == first["seconds"]
    assert {**again, "seconds": 0} == {**first, "seconds": 0}
