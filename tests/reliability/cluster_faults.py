"""Cluster faults on Ray Data: a node lost mid-run, a hung worker, a worker no node can hold, and the Ray
instance a run joins. Each test owns its Ray temp dir (RAY_TMPDIR); none touches the machine's /tmp/ray.

test_cluster_faults.py runs this file in a fresh interpreter: a driver that has joined a multi-node test
cluster keeps Ray state that a later Ray of the same process must not inherit."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from test_auto_stage import write_images

import data_engine
from data_engine.io.dataset import read_images, read_masks
from data_engine.runtime.executor import ClusterUnavailable
from data_engine.stages import run_stage

pytestmark = pytest.mark.slow
REPO = Path(data_engine.__file__).resolve().parents[1]
IMAGES = 10


@pytest.fixture(scope="module")
def ray_tmpdir():
    """A short temp dir of the module's own (Ray's socket paths must stay short)."""
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = path
    yield path
    if before is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = before


@pytest.fixture(scope="module")
def cluster(ray_tmpdir):
    """A head node with no CPU (the driver's node holds no work) and three one-CPU worker nodes."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(3):
        made.add_node(num_cpus=1)
    made.wait_for_nodes()
    ray.init(address=made.address, logging_level="WARNING")
    yield made
    ray.shutdown()
    made.shutdown()


@pytest.fixture(scope="module")
def serial_output(tmp_path_factory):
    """The same images through runtime=serial with one torch thread, as each one-CPU Ray worker has (the
    model's float sums depend on the thread count): what every Ray run must write, bit for bit."""
    import torch
    from conftest import compose_cfg

    folder = tmp_path_factory.mktemp("serial")
    write_images(folder / "in", IMAGES)
    cfg = compose_cfg([f"input.path={folder / 'in'}", "input.shard_size=1"], folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_stage(cfg)
    finally:
        torch.set_num_threads(threads)
    return folder / "in", dataset_rows(cfg["output"]["dir"])


def dataset_rows(out) -> tuple[list, list]:
    """(image rows without their timing, mask rows) in a fixed order."""
    images = read_images(out).drop_columns(["seconds"]).sort_by("file_name").to_pylist()
    masks = read_masks(out).sort_by("mask_id").to_pylist()
    return images, masks


def run_losing_a_node(cluster, make_cfg, inputs: Path, workers: int) -> tuple[dict, str]:
    """Run the automatic stage on the cluster and remove a worker node once two shards are done."""
    cfg = make_cfg(
        f"input.path={inputs}",
        "input.shard_size=1",
        "runtime=local",
        "runtime.cpus_per_worker=1",
        f"runtime.num_workers={workers}",
        "runtime.progress=false",
    )
    out = Path(cfg["output"]["dir"])
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=run_stage(cfg)))
    thread.start()
    deadline = time.monotonic() + 150
    while len(list(out.glob("_done/*/*.json"))) < 2 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    cluster.remove_node(busy_node(cluster, out))
    thread.join(timeout=240)
    assert not thread.is_alive(), "the run hung after a node was removed"
    return result["summary"], cfg["output"]["dir"]


def busy_node(cluster, out: Path):
    """A worker node (not the one the driver talks to) whose raylet runs a live shard worker: a process that
    wrote a _done record and is still alive (it has taken the next shard)."""
    import psutil
    from ray._private import worker

    pids = {json.loads(p.read_text())["worker"]["pid"] for p in out.glob("_done/*/*.json")}
    raylets = {psutil.Process(pid).ppid() for pid in pids if psutil.pid_exists(pid)}
    driver = worker._global_node._raylet_socket_name
    candidates = [n for n in cluster.worker_nodes if n._raylet_socket_name != driver]
    return next((n for n in candidates if n.all_processes["raylet"][0].process.pid in raylets), candidates[0])


def test_a_lost_node_costs_only_its_shard_with_and_without_spare_capacity(cluster, make_cfg, serial_output):
    inputs, expected = serial_output
    # No spare capacity: three workers on three one-CPU nodes, one node removed mid-run
    summary, out = run_losing_a_node(cluster, make_cfg, inputs, workers=3)
    assert summary["shards_failed"] == {} and summary["images"] == IMAGES
    assert dataset_rows(out) == expected, "the output differs from a serial run"
    # One spare node: three workers on four nodes
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    summary, out = run_losing_a_node(cluster, make_cfg, inputs, workers=2)
    assert summary["shards_failed"] == {} and summary["images"] == IMAGES
    assert dataset_rows(out) == expected
    ids = read_images(out).column("image_id")
    assert len(pc.unique(ids)) == len(ids) == IMAGES  # every image exactly once


def test_a_hung_worker_is_replaced_and_its_shard_redone(cluster, make_cfg, serial_output):
    inputs, expected = serial_output
    cfg = make_cfg(
        f"input.path={inputs}",
        "input.shard_size=3",
        "runtime=local",
        "runtime.cpus_per_worker=1",
        "runtime.progress=false",
        "runtime.shard_timeout_s=10",
        "debug.hang_on_shard=shard-000000001",
    )
    summary = run_stage(cfg)
    assert (Path(cfg["output"]["dir"]) / "_debug" / "hung-shard-000000001").exists(), "the worker did not hang"
    assert summary["shards_failed"] == {} and summary["images"] == IMAGES
    assert dataset_rows(cfg["output"]["dir"]) == expected


def test_a_worker_no_node_can_hold_is_refused_in_one_line_within_the_timeout(cluster, make_cfg, serial_output):
    cfg = make_cfg(
        f"input.path={serial_output[0]}",
        "runtime=local",
        "runtime.cpus_per_worker=64",
        "runtime.placement_timeout_s=2",
        "runtime.progress=false",
    )
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable, match=r"no node of the Ray cluster can hold a worker asking for 64 CPU"):
        run_stage(cfg)
    assert time.monotonic() - start < 30


# The Ray instance a run joins

RUN = [
    sys.executable,
    "-m",
    "data_engine",
    "amg=tiny",
    "amg.points_per_side=8",
    "amg.crop_n_layers=0",
    "runtime.progress=false",
    "runtime.cpus_per_worker=1",
    "output.overlays=0",
    "input.shard_size=3",
]


def cli(args: list[str], tmp: Path, timeout: int) -> subprocess.CompletedProcess:
    """The CLI with a Ray temp dir that advertises a cluster which is gone (a stale address file)."""
    (tmp / "ray").mkdir(parents=True, exist_ok=True)
    (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # nothing listens on the discard port
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(RUN + args, capture_output=True, text=True, timeout=timeout, env=env)


def test_runtime_local_starts_its_own_ray_and_ignores_an_advertised_cluster(tmp_path):
    tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    write_images(tmp_path / "in", 3)
    proc = cli([f"input.path={tmp_path / 'in'}", f"output.dir={tmp_path / 'out'}", "runtime=local"], tmp, 300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_images(tmp_path / "out")) == 3
    # Ray's notices that a user cannot act on stay out of the run's output
    assert "constructor arguments" not in proc.stderr and "Token authentication" not in proc.stderr, proc.stderr


def test_runtime_ray_cluster_at_a_dead_address_is_one_line_within_the_timeout(tmp_path):
    tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    write_images(tmp_path / "in", 1)
    start = time.monotonic()
    proc = cli(
        [
            f"input.path={tmp_path / 'in'}",
            f"output.dir={tmp_path / 'out'}",
            "runtime=ray_cluster",
            "runtime.connect_timeout_s=3",
        ],
        tmp,
        120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "runtime.address=127.0.0.1:9: no Ray cluster answers there within 3 s" in lines[-1]
    assert time.monotonic() - start < 60
