"""Run shards on Ray (local or cluster) or serially. The only module that imports Ray."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from tqdm import tqdm

from data_engine.runtime.reasons import reason

log = logging.getLogger(__name__)

# worker(shard, on_image) -> stats {"images", "masks", "failed", "seconds"}; it calls
# on_image(shard_id, index, masks, failed) after each image so progress moves image by image.
Worker = Callable[[dict, Callable], dict]


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
    worker, failed = make_worker(), {}
    try:
        for shard in shards:
            stats = worker(shard, progress.image_done)
            progress.shard_done(shard, stats)
            failed.update(stats.get("write_failed", {}))
    finally:
        failed.update(close_worker(worker))
    return failed


def close_worker(worker) -> dict:
    """Let a worker finish what it does in the background (e.g. its last shard's write); the shards
    whose write failed, {shard_id: reason}."""
    close = getattr(worker, "close", None)
    return close() if close else {}


def run_ray(shards, make_worker, runtime, progress) -> dict:
    import ray
    from ray.util.queue import Queue

    init_ray(runtime)
    events = Queue()  # per-image progress from the workers
    pool = ActorPool(ray, make_actor(ray, runtime), make_worker, events, num_workers(ray, runtime, len(shards)))
    queue, running, failed = list(shards), {}, {}  # running: result ref -> (actor, shard)
    # Keep every live actor busy with one shard; Ray restarts a dead actor and retries its shard
    while queue and pool.alive() or running:
        while queue and pool.idle:
            actor, shard = pool.idle.pop(), queue.pop(0)
            running[actor.process.remote(shard)] = (actor, shard)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        drain(events, progress)
        for ref in ready:
            actor, shard = running.pop(ref)
            try:
                stats = ray.get(ref)
                progress.shard_done(shard, stats)
                failed.update(stats.get("write_failed", {}))
                queue.extend(pool.returned(actor, shard, stats))
            except Exception as err:  # the shard boundary: record the failure, keep going
                failed[shard["shard_id"]] = reason(err)
                log.error("shard %s failed after retries: %s", shard["shard_id"], failed[shard["shard_id"]])
                progress.fail(shard)
                queue.extend(pool.after_failure(actor, err))
    failed.update(pool.close())
    for shard in queue:  # no worker could be started or kept
        failed[shard["shard_id"]] = f"not run: no worker left ({pool.last_death})"
        progress.fail(shard)
    return failed


class ActorPool:
    """The shard actors. One that can no longer run (it died, and Ray has used up its restarts) never
    gets another shard: it is replaced by a fresh actor, unless it died while starting (that would
    happen again)."""

    def __init__(self, ray, actor_class, make_worker, events, size: int):
        self.ray, self.new = ray, lambda: actor_class.remote(make_worker, events)
        self.idle = [self.new() for _ in range(size)]
        self.live, self.last_death = len(self.idle), None
        self.writing = {}  # id(actor) -> shards it returned while still writing them in the background
        self.requeued = set()

    def alive(self) -> bool:
        return self.live > 0

    def returned(self, actor, shard: dict, stats: dict) -> list[dict]:
        """The actor is idle again; shards to run again: those it returned earlier whose write it does not
        confirm (written or failed) now: its process was restarted and their data lost."""
        known = {*stats.get("written", []), *stats.get("write_failed", {})}
        lost = [s for s in self.writing.pop(id(actor), []) if s["shard_id"] not in known]
        self.writing[id(actor)] = [shard] if stats.get("writing") else []
        self.idle.append(actor)
        return self.again(lost)

    def again(self, shards: list[dict]) -> list[dict]:
        """Each lost shard runs once more (a shard lost twice is left to the summary's check)."""
        shards = [s for s in shards if s["shard_id"] not in self.requeued]
        self.requeued |= {s["shard_id"] for s in shards}
        for s in shards:
            log.warning("shard %s is run again: its worker stopped while writing it", s["shard_id"])
        return shards

    def after_failure(self, actor, err: Exception) -> list[dict]:
        """Shards to run again: those the actor was still writing when it died (their data may be lost)."""
        if not isinstance(err, self.ray.exceptions.RayActorError):
            return self.returned(actor, {}, {"written": [s["shard_id"] for s in self.writing.get(id(actor), [])]})
        self.last_death = reason(err)
        unwritten = self.again(self.writing.pop(id(actor), []))
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        if getattr(err, "actor_init_failed", False):
            self.live -= 1
            log.error("a worker could not start and is dropped (%d left): %s", self.live, self.last_death)
        else:
            log.warning("a worker died; starting a fresh one in its place")
            self.idle.append(self.new())
        return unwritten

    def close(self) -> dict:
        """Each live actor's background work finished; {shard_id: reason} for shards it could not write."""
        failed = {}
        for actor in self.idle:
            try:
                failed.update(self.ray.get(actor.close.remote()))
            except self.ray.exceptions.RayActorError as err:
                log.warning("a worker died before closing: %s", reason(err))
        return failed


def drain(events, progress) -> None:
    size = events.qsize()
    for event in events.get_nowait_batch(size) if size else []:
        progress.image_done(*event)


def init_ray(runtime: dict) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = runtime.get("address") if runtime["name"] == "ray_cluster" else None
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )


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

    def __init__(self, make_worker: Callable[[], Worker], events):
        self.worker, self.events = make_worker(), events

    def process(self, shard: dict) -> dict:
        return self.worker(shard, lambda *event: self.events.put_nowait(event))

    def close(self) -> dict:
        return close_worker(self.worker)


class Progress:
    """Images done, masks per second and failures, updated image by image.

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
        """Count what per-image events have not (a worker that does not report per image)."""
        rest = len(shard["files"]) - self.counted.get(shard["shard_id"], 0)
        if rest > 0:
            self.counted[shard["shard_id"]] = len(shard["files"])
            self.masks += stats.get("masks", 0) if rest == len(shard["files"]) else 0
            self.failed += stats.get("failed", 0) if rest == len(shard["files"]) else 0
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
