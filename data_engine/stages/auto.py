"""The fully-automatic stage as a job: inputs -> shards -> masks/ and images/ Parquet tables."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from data_engine.amg import candidates
from data_engine.amg.worker import AutoWorker
from data_engine.io import inputs
from data_engine.model.build import model_record
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.verifier.score import checkpoint_record

log = logging.getLogger(__name__)


def run(cfg: dict, settings: None = None) -> dict:
    """Generate masks for every input image; resumes an interrupted run in the same output.dir. The stage
    has no section of its own (`settings` is None): it reads the amg, input and model sections, and the
    verifier section's checkpoint (a verifier_score on every mask)."""
    input_cfg = cfg["input"]
    listing = inputs.list_inputs(input_cfg["path"], input_cfg["extensions"], input_cfg["follow_symlinks"])
    if listing.ignored:
        log.warning(
            "%d files under %s were ignored (first: %s)",
            len(listing.ignored),
            listing.root,
            next(iter(listing.ignored.items())),
        )
    out_dir = Path(cfg["output"]["dir"])
    job = ShardedJob(
        out_dir=out_dir,
        config=cfg,
        shards=inputs.make_shards(listing.names, input_cfg["shard_size"], listing.root, listing.stamps),
        make_worker=partial(AutoWorker, cfg, str(listing.root)),
        runtime=cfg["runtime"],
        record={
            "model": model_record(cfg["model"]),
            "verifier": checkpoint_record(cfg["verifier"]["checkpoint"]),
            "input_root": str(listing.root),
        },
        info={"inputs": len(listing.names), "ignored_files": listing.ignored},
        parts=("masks", "images", candidates.PART) if cfg["amg"]["keep_candidates"] else ("masks", "images"),
    )
    summary = run_job(job)
    if cfg["output"].get("overlays"):
        from data_engine.io.overlays import write_overlays

        summary["overlays"] = write_overlays(out_dir, listing.root, cfg["output"]["overlays"])
    return summary
