"""Stage 2's prefill as a job: inputs -> shards -> masks/ and images/ Parquet tables -> pre-annotation files.

Sharded, resumed and retried exactly like the automatic stage (its worker, with detector boxes as the
prompts): every input image gets an images/ row, ok or failed with its reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from pathlib import Path

from data_engine.errors import ConfigError, check_bool, check_int, check_number, require
from data_engine.io import inputs
from data_engine.model.build import model_record
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.semi.worker import SemiWorker
from data_engine.verifier.score import ROUTES, check_routing, checkpoint_record

log = logging.getLogger(__name__)

EXPORTS = ("labelstudio", "cvat_xml", "coco")
# Keys that do not change the masks: a rerun may change them without starting over.
NOT_IN_FINGERPRINT = ("export", "image_url")


def run(cfg: dict) -> dict:
    """Prefill every input image; resumes an interrupted run in the same output.dir."""
    s = check(cfg["semi"])
    i = cfg["input"]
    listing = inputs.list_inputs(i["path"], i["extensions"], i["follow_symlinks"])
    if listing.ignored:
        log.warning("%d files under %s were ignored (see run.json's ignored_files)", len(listing.ignored), listing.root)
    out_dir = Path(cfg["output"]["dir"])

    def export(summary: dict) -> dict:
        from data_engine.semi.preannotations import write_preannotations

        return {
            "preannotations": write_preannotations(out_dir, out_dir / "preannotations", s["export"], s["image_url"])
        }

    job = ShardedJob(
        out_dir=out_dir,
        config=fingerprinted(cfg),
        shards=inputs.make_shards(listing.names, i["shard_size"], listing.root, listing.stamps),
        make_worker=partial(SemiWorker, cfg, str(listing.root)),
        runtime=cfg["runtime"],
        record={
            "model": model_record(cfg["model"]),
            "detector": detector_record(cfg["detector"]),
            "verifier": checkpoint_record(check_routing(cfg["verifier"])),
            "input_root": str(listing.root),
        },
        info={"inputs": len(listing.names), "ignored_files": listing.ignored},
        summarize=summarize,
        extra_summary=export if s["export"] else None,
    )
    return run_job(job)


def summarize(shards: list[dict], records: dict, failed: dict) -> dict:
    """The dataset summary plus masks by source (and by the verifier's route) and ok images without a
    mask, from the _done records."""
    sources, routes, done = Counter(), Counter(), [records[s["shard_id"]] for s in shards if s["shard_id"] in records]
    for record in done:
        sources.update(record.get("masks_by_source", {}))
        routes.update(record.get("masks_by_route", {}))
    summary = {
        **runs.summarize(shards, records, failed),
        "masks_by_source": dict(sorted(sources.items())),
        "images_without_masks": sum(r.get("images_without_masks", 0) for r in done),
    }
    if routes:
        summary["masks_by_route"] = {k: routes[k] for k in ROUTES}
    return summary


def check(s: dict) -> dict:
    """The semi section, or a ConfigError naming the key."""
    check_number(s, "semi.box_score_thresh", 0, 1)
    check_number(s, "semi.box_nms_thresh", 0, 1)
    check_int(s, "semi.max_boxes", 1)
    check_number(s, "semi.min_box_iou", 0, 1)
    check_bool(s, "semi.points_fill")
    check_number(s, "semi.fill_overlap", 0, 1)
    export = s["export"]
    require(
        isinstance(export, list) and all(e in EXPORTS for e in export),
        "semi.export",
        f"must be a list of formats from {list(EXPORTS)} (or []), got {export!r}",
    )
    require(isinstance(s["image_url"], str), "semi.image_url", f"must be a string, got {s['image_url']!r}")
    return s


def fingerprinted(cfg: dict) -> dict:
    """The config as the run's fingerprint sees it: the pre-annotation settings left out."""
    return {**cfg, "semi": {k: v for k, v in cfg["semi"].items() if k not in NOT_IN_FINGERPRINT}}


def detector_record(d: dict) -> dict:
    """Variant and checksum of the detector checkpoint, recorded with the run and checked on resume."""
    from data_engine.detector.model import load_detector
    from data_engine.io.atomic import sha256_file

    if not d.get("checkpoint"):
        raise ConfigError(
            "detector.checkpoint: stage=semi needs a trained detector: pass detector.checkpoint=DET/model.pt "
            "(written by stage=detector)"
        )
    path = Path(d["checkpoint"]).expanduser().resolve()
    model = load_detector(path)  # fail here, before any worker starts
    return {"checkpoint": str(path), "sha256": sha256_file(path), "class": type(model).__name__}
