"""Run shards on Ray (local or cluster) or serially. The only module that imports Ray."""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

from tqdm import tqdm

log = logging.getLogger(__name__)

Worker = Callable[[dict], dict]  # shard -> stats {"images", "masks", "failed", "seconds"}


def run_shards(shards: list[dict], make_worker: Callable[[], Worker], runtime: dict) -> dict:
    """Process every shard; returns {shard_id: error} for shards that could not be finished."""
    if not shards:
        return {}
    progress = Progress(shards, enabled=runtime.get("progress", True))
    try:
        if runtime["name"] == "serial":
            return run_serial(shards, make_worker, progress)
        return run_ray(shards, make_worker, runtime, progress)
    finally:
        progress.close()


def run_serial(shards, make_worker, progress) -> dict:
    worker = make_worker()
    for shard in shards:
        progress.update(worker(shard))
    return {}


def run_ray(shards, make_worker, runtime, progress) -> dict:
    import ray

    init_ray(runtime)
    actors = [make_actor(ray, runtime).remote(make_worker) for _ in range(num_workers(ray, runtime, len(shards)))]
    queue, running, failed = list(shards), {}, {}  # running: result ref -> (actor, shard)
    idle = list(actors)
    # Keep every actor busy with one shard; an actor that dies is restarted and its shard retried by Ray
    while queue or running:
        while queue and idle:
            actor, shard = idle.pop(), queue.pop(0)
            running[actor.process.remote(shard)] = (actor, shard)
        (ref,), _ = ray.wait(list(running), num_returns=1)
        actor, shard = running.pop(ref)
        idle.append(actor)
        try:
            progress.update(ray.get(ref))
        except Exception as err:  # the shard boundary: record the failure, keep going
            failed[shard["shard_id"]] = f"{type(err).__name__}: {first_line(err)}"
            log.error("shard %s failed after retries: %s", shard["shard_id"], failed[shard["shard_id"]])
            progress.fail(shard)
    return failed


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def init_ray(runtime: dict) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = runtime.get("address") if runtime["name"] == "ray_cluster" else None
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=True, configure_logging=True)


def make_actor(ray, runtime: dict):
    """The shard actor class with this runtime's resources and retry policy."""
    use_gpu = bool(ray.cluster_resources().get("GPU", 0))
    return ray.remote(
        num_cpus=runtime["cpus_per_worker"],
        num_gpus=runtime["gpus_per_worker"] if use_gpu else 0,
        max_restarts=runtime["max_retries"],
        max_task_retries=runtime["max_retries"],
    )(ShardActor)


def num_workers(ray, runtime: dict, n_shards: int) -> int:
    if runtime.get("num_workers"):
        return min(runtime["num_workers"], n_shards)
    resources = ray.cluster_resources()
    if resources.get("GPU", 0):
        slots = int(resources["GPU"] // runtime["gpus_per_worker"])
    else:
        slots = int(resources.get("CPU", 1) // runtime["cpus_per_worker"])
    return max(1, min(slots, n_shards))


class ShardActor:
    """Holds one worker (and so one loaded model) across shards."""

    def __init__(self, make_worker: Callable[[], Worker]):
        self.worker = make_worker()

    def process(self, shard: dict) -> dict:
        return self.worker(shard)


class Progress:
    """Images done, masks per second and failures, updated as shards finish."""

    def __init__(self, shards: list[dict], enabled: bool):
        self.bar = tqdm(total=sum(len(s["files"]) for s in shards), unit="img", disable=not enabled,
                        dynamic_ncols=True)
        self.start, self.masks, self.failed = time.time(), 0, 0

    def update(self, stats: dict) -> None:
        self.masks += stats.get("masks", 0)
        self.failed += stats.get("failed", 0)
        rate = self.masks / max(time.time() - self.start, 1e-9)
        self.bar.set_postfix(masks=self.masks, masks_per_s=f"{rate:.1f}", failed=self.failed)
        self.bar.update(stats.get("images", 0))

    def fail(self, shard: dict) -> None:
        self.failed += len(shard["files"])
        self.bar.set_postfix(masks=self.masks, failed=self.failed, shards_failed="yes")
        self.bar.update(len(shard["files"]))

    def close(self) -> None:
        self.bar.close()
