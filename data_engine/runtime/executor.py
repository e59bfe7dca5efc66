"""Run shards serially or on Ray Data (this machine's own Ray, or a cluster). The only module that imports Ray.

On Ray, the shards are a Ray Data dataset of one row per shard, mapped by a pool of actors that each hold
one worker (and so one loaded model). A shard whose worker dies (its node lost, the process killed, a
hang past runtime.shard_timeout_s) is not restarted in place: the pass goes on with the live actors,
and the shards that did not come back run again in a further pass, at most runtime.max_retries times.
The driver receives one small record per shard, never one event per image.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import sys
import threading
import time
import warnings
from typing import Callable

from tqdm import tqdm

from data_engine.errors import UserError
from data_engine.runtime.reasons import reason

log = logging.getLogger(__name__)

# worker(shard, on_image) -> stats {"images", "masks", "failed", ...}; on_image(shard_id, index, masks,
# failed) after each image moves a serial run's progress bar (on Ray, progress comes once per shard).
Worker = Callable[[dict, Callable], dict]
HUNG = 19  # exit status of a worker process that stopped itself after runtime.shard_timeout_s


class ClusterUnavailable(UserError, RuntimeError):
    """The Ray cluster cannot be reached, or cannot place a worker."""


def run_shards(shards: list[dict], make_worker: Callable[[], Worker], runtime: dict) -> tuple[dict, dict]:
    """Process every shard: ({shard_id: stats} of shards done, {shard_id: reason} of shards that failed)."""
    if not shards:
        return {}, {}
    progress = Progress(shards, enabled=runtime.get("progress", True))
    try:
        if runtime["name"] == "serial":
            return run_serial(shards, make_worker, progress)
        return run_ray_data(shards, make_worker, runtime, progress)
    finally:
        progress.close()


def run_serial(shards, make_worker, progress) -> tuple[dict, dict]:
    worker, done, failed = make_worker(), {}, {}
    try:
        for shard in shards:
            stats = worker(shard, progress.image_done)
            done[shard["shard_id"]] = stats
            progress.shard_done(shard, stats)
            failed.update(stats.get("write_failed", {}))
    finally:
        failed.update(close_worker(worker))
    return {k: v for k, v in done.items() if k not in failed}, failed


def close_worker(worker) -> dict:
    """Let a worker finish what it does in the background (e.g. its last shard's write); the shards
    whose write failed, {shard_id: reason}."""
    close = getattr(worker, "close", None)
    return close() if close else {}


# Ray Data


def run_ray_data(shards, make_worker, runtime, progress) -> tuple[dict, dict]:
    """Passes of Ray Data over the shards not yet done; each pass runs every shard once."""
    import ray

    init_ray(runtime)
    resources = worker_resources(ray, runtime)
    wait_for_a_node(ray, resources, runtime["placement_timeout_s"])
    by_id = {s["shard_id"]: s for s in shards}
    done, failed, todo = {}, {}, list(by_id)
    for attempt in range(runtime["max_retries"] + 1):
        if attempt:
            log.warning(
                "%d shards lost their worker; running them again (retry %d of %d)",
                len(todo),
                attempt,
                runtime["max_retries"],
            )
        for shard_id, stats in one_pass(ray, [by_id[i] for i in todo], make_worker, runtime, resources):
            if "error" in stats:
                failed[shard_id] = stats["error"]
                progress.fail(by_id[shard_id])
                continue
            done[shard_id] = stats
            progress.shard_done(by_id[shard_id], stats)
            failed.update(stats.get("write_failed", {}))
        todo = [i for i in todo if i not in done and i not in failed]
        if not todo:
            break
    for shard_id in todo:
        failed[shard_id] = (
            f"WorkerLost: its worker process ended on each of {runtime['max_retries'] + 1} attempts "
            "(node lost, killed, out of memory or past runtime.shard_timeout_s; see the Ray logs)"
        )
        progress.fail(by_id[shard_id])
    return {k: v for k, v in done.items() if k not in failed}, failed


def one_pass(ray, shards: list[dict], make_worker, runtime: dict, resources: dict):
    """(shard_id, stats) of each shard this pass finished, as they finish; shards whose worker died are
    left out (Ray Data counts them as errored blocks and goes on)."""
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.max_errored_blocks = -1  # a dead worker's shard is skipped in this pass and run in the next
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    size = num_workers(ray, runtime, resources, len(shards))
    rows = [{"shard": pickle.dumps(s)} for s in shards]
    with warnings.catch_warnings():  # Ray Data has no other way yet to set an actor's restarts
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ShardMapper,
            batch_size=1,
            # one shard at a time per worker: a dead worker loses only the shard it was running
            compute=ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"make_worker": make_worker, "timeout_s": runtime["shard_timeout_s"]},
            num_cpus=resources["CPU"],
            num_gpus=resources.get("GPU", 0),
            # A dead actor is restarted (on another node if its node is gone) but its shard is not retried in
            # place (that retry would wait for the restart, forever if no node has room): the pass goes on
            # with the live actors and the shard runs in the next pass
            ray_remote_args_fn=lambda: {"max_restarts": -1, "max_task_retries": 0},
        )
    with DroppedLines(RAY_NOTICES):
        for row in dataset.iter_rows():
            yield row["shard_id"], json.loads(row["stats"])


# Ray core prints this in red for every Ray Data actor pool (Ray Data passes its actors object references
# and restarts them, ray-project/ray#53727): it says nothing a user of this project can act on.
RAY_NOTICES = (b"has constructor arguments in the object store and max_restarts > 0",)


class DroppedLines:
    """While active, lines of this process's stderr (fd 2, where Ray core's C++ logger writes) that contain
    one of `patterns` are dropped; everything else passes through unchanged (progress bars included)."""

    def __init__(self, patterns: tuple[bytes, ...]):
        self.patterns = patterns

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.pump = threading.Thread(target=self.forward, args=(read_end,), daemon=True)
        self.pump.start()
        return self

    def forward(self, read_end: int) -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not any(p in line for p in self.patterns))
            cut = pending.rfind(b"\r") + 1  # a progress bar's redraw goes out before its line ends
            out, pending = out + pending[:cut], pending[cut:]
            if out:
                os.write(self.saved, out)
        if pending:
            os.write(self.saved, pending)
        os.close(read_end)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the pump drains it and stops
        self.pump.join(timeout=5)
        os.close(self.saved)


class ShardMapper:
    """A Ray Data actor: holds one worker across shards; each call is one shard, written before it returns."""

    def __init__(self, make_worker: Callable[[], Worker], timeout_s: float | None):
        self.worker, self.timeout_s = make_worker(), timeout_s

    def __call__(self, batch: dict) -> dict:
        shard = pickle.loads(batch["shard"][0])
        watchdog = start_watchdog(shard["shard_id"], self.timeout_s)
        try:
            stats = self.worker(shard, lambda *event: None)
            stats["write_failed"] = {**stats.get("write_failed", {}), **close_worker(self.worker)}
        except Exception as err:  # the shard boundary: its reason goes back to the driver, the worker lives on
            stats = {"error": reason(err)}
        finally:
            if watchdog:
                watchdog.cancel()
        return {"shard_id": [shard["shard_id"]], "stats": [json.dumps(stats, default=str)]}


def start_watchdog(shard_id: str, timeout_s: float | None):
    """A timer that ends this worker process if the shard is not done in timeout_s: a hung worker is then
    replaced like a dead one and its shard redone."""
    if not timeout_s:
        return None

    def stop():
        log.error(
            "shard %s still running after %s s (runtime.shard_timeout_s): stopping its worker", shard_id, timeout_s
        )
        os._exit(HUNG)

    timer = threading.Timer(timeout_s, stop)
    timer.daemon = True
    timer.start()
    return timer


def worker_resources(ray, runtime: dict) -> dict:
    """What each worker asks of a node: its CPUs, and a GPU share where the cluster has GPUs."""
    use_gpu = bool(ray.cluster_resources().get("GPU", 0))
    return {"CPU": runtime["cpus_per_worker"], **({"GPU": runtime["gpus_per_worker"]} if use_gpu else {})}


def wait_for_a_node(ray, resources: dict, timeout_s: float) -> None:
    """Return once some live node can hold a worker; after timeout_s (nodes may still be joining), one
    line saying what the largest node has."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if any(all(n.get(k, 0) >= v for k, v in resources.items()) for n in nodes):
            return
        if time.monotonic() >= deadline:
            largest = max(nodes, key=lambda n: n.get("CPU", 0), default={})
            raise ClusterUnavailable(
                f"no node of the Ray cluster can hold a worker asking for {fmt(resources)} (the largest node has "
                f"{fmt({k: largest.get(k, 0) for k in resources})}; waited {timeout_s:g} s for one to join): "
                "lower runtime.cpus_per_worker / runtime.gpus_per_worker or add larger nodes"
            )
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))


def fmt(resources: dict) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in resources.items())


def num_workers(ray, runtime: dict, resources: dict, n_shards: int) -> int:
    """runtime.num_workers, or as many as the cluster's CPUs (GPUs where it has them) can hold."""
    if runtime.get("num_workers"):
        return min(runtime["num_workers"], n_shards)
    total = ray.cluster_resources()
    kind = "GPU" if "GPU" in resources else "CPU"
    return max(1, min(int(total.get(kind, 1) // resources[kind]), n_shards))


# Joining Ray


def init_ray(runtime: dict) -> None:
    """runtime=local starts a Ray of this run's own (never one the machine advertises: a stale or foreign
    cluster would hang or break the run); runtime=ray_cluster joins runtime.address, after checking within
    runtime.connect_timeout_s that it answers."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if runtime["name"] == "ray_cluster":
        address = cluster_address(runtime)
        check_reachable(address, runtime["connect_timeout_s"])
    else:  # a Ray of the run's own, on this machine only: its token notice says nothing to act on
        address = "local"
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )


def cluster_address(runtime: dict) -> str:
    """runtime.address, or with `auto` the RAY_ADDRESS variable (ray job submit sets it); one line if neither."""
    address = runtime.get("address")
    if address in (None, "", "auto"):
        address = os.environ.get("RAY_ADDRESS") or started_here()
    if not address or address in ("auto", "local"):
        raise ClusterUnavailable(
            "runtime=ray_cluster needs the cluster's address: pass runtime.address=HOST:6379 (or ray://HOST:10001), "
            "or set RAY_ADDRESS; runtime=local starts a Ray of this run's own"
        )
    return address


def started_here() -> str | None:
    """The address `ray start` left on this machine (under RAY_TMPDIR or /tmp), if any."""
    from ray._private.services import find_bootstrap_address

    try:
        return find_bootstrap_address(None)
    except Exception:  # no readable address file
        return None


def check_reachable(address: str, timeout_s: float) -> None:
    """A TCP connection to the address's host and port within timeout_s, or one line saying what to do."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as err:
        raise ClusterUnavailable(
            f"runtime.address={address}: no Ray cluster answers there within {timeout_s:g} s ({reason(err)}): "
            "start it (ray start --head) or fix the address; runtime=local starts a Ray of this run's own"
        ) from None


class Progress:
    """Images done, masks per second and failures: image by image in a serial run, shard by shard on Ray.

    A retried shard reports its images again: only images beyond those already counted move the bar.
    """

    def __init__(self, shards: list[dict], enabled: bool):
        self.bar = tqdm(total=sum(len(s["files"]) for s in shards), unit="img", disable=not enabled, dynamic_ncols=True)
        self.start, self.done, self.masks, self.failed, self.counted = time.time(), 0, 0, 0, {}

    def image_done(self, shard_id: str, index: int, masks: int, failed: bool) -> None:
        if index < self.counted.get(shard_id, 0):
            return
        self.counted[shard_id] = index + 1
        self.masks += masks
        self.failed += int(failed)
        self.advance(1)

    def shard_done(self, shard: dict, stats: dict) -> None:
        """Count what per-image events have not (a worker on Ray reports once per shard)."""
        rest = len(shard["files"]) - self.counted.get(shard["shard_id"], 0)
        if rest > 0:
            self.counted[shard["shard_id"]] = len(shard["files"])
            self.masks += stats.get("masks", 0) if rest == len(shard["files"]) else 0
            self.failed += as_count(stats.get("failed", 0)) if rest == len(shard["files"]) else 0
            self.advance(rest)

    def fail(self, shard: dict) -> None:
        rest = len(shard["files"]) - self.counted.get(shard["shard_id"], 0)
        self.failed += rest
        self.advance(rest, shards_failed="yes")

    def advance(self, images: int, **extra) -> None:
        self.done += images
        self.bar.update(images)
        rate = self.masks / max(time.time() - self.start, 1e-9)
        self.bar.set_postfix(masks=self.masks, masks_per_s=f"{rate:.1f}", failed=self.failed, **extra)

    def close(self) -> None:
        self.bar.close()


def as_count(failed) -> int:
    """A worker's failed images as a count (some workers return the list of failures)."""
    return len(failed) if isinstance(failed, (list, dict)) else int(failed or 0)
