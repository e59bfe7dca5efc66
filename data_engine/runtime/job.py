"""One way to run a sharded stage: a stage declares its shards, its worker and its extra summary fields;
`run_job` owns the steps (prepare the output, find the pending shards in the ledger, drop stale shards,
run, summarize from the ledger, write summary.json once)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data_engine.runtime import runs
from data_engine.runtime.executor import Worker, run_shards

log = logging.getLogger(__name__)


@dataclass
class ShardedJob:
    out_dir: Path
    config: dict  # recorded in run.json and fingerprinted (the stage's config, or the part that decides its bytes)
    shards: list[dict]  # [{"shard_id", "files", optional "inputs" digest}, ...]
    make_worker: Callable[[], Worker]  # built once per worker process; worker(shard, on_image) -> stats
    runtime: dict
    record: dict = field(default_factory=dict)  # fingerprinted with the config (model checksum, input root)
    info: dict = field(default_factory=dict)  # only recorded (input count, ignored files)
    parts: tuple = ("masks", "images")  # the shard files a worker writes, removed when the shard is redone
    # summarize(shards, ledger, failed) -> summary fields; the default counts images, failures and masks
    summarize: Callable[[list, dict, dict], dict] = runs.summarize
    extra_summary: Callable[[dict], dict] | None = None  # more fields once the summary exists (e.g. exports)
    before_run: Callable[[list], None] | None = None  # e.g. remove what a stage writes beside its shards


def run_job(job: ShardedJob) -> dict:
    """Run the job's pending shards and return its summary (also written to summary.json)."""
    start = time.time()
    runs.prepare_output(job.out_dir, job.config, job.record, job.info)
    ledger = runs.read_ledger(job.out_dir)
    todo = runs.pending(job.shards, ledger)
    ledger = runs.drop_stale_shards(job.out_dir, job.shards, todo, ledger, job.parts)
    if job.before_run:
        job.before_run(todo)
    log.info("%d shards, %d to do", len(job.shards), len(todo))
    done, failed = run_shards(todo, job.make_worker, job.runtime)
    summary = {"output": str(job.out_dir), **job.summarize(job.shards, {**ledger, **done}, failed)}
    summary["seconds"] = round(time.time() - start, 2)
    if job.extra_summary:
        summary.update(job.extra_summary(summary))
    return runs.write_summary(job.out_dir, summary)
