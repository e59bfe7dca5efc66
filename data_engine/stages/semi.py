"""Stage 2's prefill as a job: inputs -> shards -> masks/ and images/ Parquet tables -> pre-annotation files.

Sharded, resumed and retried exactly like the automatic stage (its worker, with detector boxes as the
prompts): every input image gets an images/ row, ok or failed with its reason. With verifier.checkpoint,
every prefilled mask is scored and routed (accepted, review, rejected: semi.worker); the pre-annotations
hold the review masks only.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from data_engine.errors import ConfigError
from data_engine.io import inputs
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.schema import setting
from data_engine.verifier.routes import ROUTES

log = logging.getLogger(__name__)

EXPORTS = ("labelstudio", "cvat_xml", "coco")
# Keys that do not change the masks: a rerun may change them without starting over.
NOT_IN_FINGERPRINT = ("export", "image_url")


@dataclass(frozen=True)
class Semi:
    box_score_thresh: float = setting(0.5, ge=0, le=1)  # detector boxes scoring below this are not prompted
    box_nms_thresh: float = setting(0.5, ge=0, le=1)  # a box overlapping a higher-scoring one above this IoU is dropped
    max_boxes: int = setting(300, ge=1)  # boxes prompted per image at most, best first
    # a mask whose bounding box has a lower IoU with its detector box is not prefilled (0: off)
    min_box_iou: float = setting(0.0, ge=0, le=1)
    # true: the automatic point grid also runs; its masks mostly outside the prefill are kept
    points_fill: bool = setting(False)
    fill_overlap: float = setting(0.5, ge=0, le=1)  # points_fill: a grid mask this much prefilled is dropped
    # pre-annotation files written to output.dir/preannotations/ ([]: none)
    export: list[str] = setting(list(EXPORTS), choices=EXPORTS)
    # Label Studio tasks reference each image as image_url + file name. null: /data/local-files/?d=<name of the
    # input folder>/, for Label Studio's local files with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT at the input
    # folder's parent and a local-files storage at the input folder (docs/stages/semi.md)
    image_url: str | None = setting(None)


def run(cfg: dict, settings: Semi) -> dict:
    """Prefill every input image; resumes an interrupted run in the same output.dir."""
    from data_engine.model.build import model_record
    from data_engine.semi.worker import SemiWorker
    from data_engine.verifier.score import checkpoint_record

    input_cfg = cfg["input"]
    listing = inputs.list_inputs(input_cfg["path"], input_cfg["extensions"], input_cfg["follow_symlinks"])
    if listing.ignored:
        log.warning("%d files under %s were ignored (see run.json's ignored_files)", len(listing.ignored), listing.root)
    out_dir = Path(cfg["output"]["dir"])

    def export(summary: dict) -> dict:
        from data_engine.semi.preannotations import local_files_url, write_preannotations

        image_url = local_files_url(listing.root) if settings.image_url is None else settings.image_url
        return {"preannotations": write_preannotations(out_dir, out_dir / "preannotations", settings.export, image_url)}

    job = ShardedJob(
        out_dir=out_dir,
        config=fingerprinted(cfg),
        shards=inputs.make_shards(listing.names, input_cfg["shard_size"], listing.root, listing.stamps),
        make_worker=partial(SemiWorker, cfg, str(listing.root)),
        runtime=cfg["runtime"],
        record={
            "model": model_record(cfg["model"]),
            "detector": detector_record(cfg["detector"]),
            "verifier": checkpoint_record(cfg["verifier"]["checkpoint"]),
            "input_root": str(listing.root),
        },
        info={"inputs": len(listing.names), "ignored_files": listing.ignored},
        summarize=summarize,
        extra_summary=export if settings.export else None,
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
