"""Stage 2's prefill as a job: inputs -> shards -> masks/ and images/ Parquet tables -> pre-annotation files.

Sharded, resumed and retried exactly like the automatic stage (its worker, with detector boxes as the
prompts): every input image gets an images/ row, ok or failed with its reason.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from functools import partial
from pathlib import Path

from data_engine.errors import ConfigError, check_bool, check_int, check_number, require
from data_engine.io import inputs
from data_engine.io.atomic import write_json_atomic
from data_engine.io.dataset import mask_row, read_images, read_masks
from data_engine.runtime import runs
from data_engine.runtime.executor import run_shards
from data_engine.stages.auto import AutoWorker, model_record

log = logging.getLogger(__name__)

PREFILL_KEYS = ("box_score_thresh", "box_nms_thresh", "max_boxes", "min_box_iou", "points_fill", "fill_overlap")
EXPORTS = ("labelstudio", "cvat_xml", "coco")
# Keys that do not change the masks: a rerun may change them without starting over.
NOT_IN_FINGERPRINT = ("export", "image_url")


def run(cfg: dict) -> dict:
    """Prefill every input image; resumes an interrupted run in the same output.dir."""
    start = time.time()
    s = check(cfg["semi"])
    i = cfg["input"]
    root, names, ignored = inputs.list_inputs(i["path"], i["extensions"], i["follow_symlinks"])
    if ignored:
        log.warning("%d files under %s were ignored (see run.json's ignored_files)", len(ignored), root)
    out_dir = Path(cfg["output"]["dir"])
    shards = inputs.make_shards(names, i["shard_size"], root)
    record = {"model": model_record(cfg), "detector": detector_record(cfg["detector"]), "input_root": str(root)}
    runs.prepare_output(out_dir, fingerprinted(cfg), record, {"inputs": len(names), "ignored_files": ignored})
    todo = runs.pending(shards, out_dir)
    runs.drop_stale_shards(out_dir, shards, todo)
    log.info("%d images in %d shards; %d shards to do", len(names), len(shards), len(todo))
    failed = run_shards(todo, partial(SemiWorker, cfg, str(root)), cfg["runtime"])
    summary = {**runs.summarize(out_dir, shards, failed, time.time() - start), **prefill_counts(out_dir)}
    if s["export"]:
        from data_engine.semi.preannotations import write_preannotations

        summary["preannotations"] = write_preannotations(
            out_dir, out_dir / "preannotations", s["export"], s["image_url"]
        )
    write_json_atomic(summary, out_dir / "summary.json")
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


def prefill_counts(out_dir: Path) -> dict:
    """Masks by source and ok images that got no mask, from the written tables."""
    sources = Counter(read_masks(out_dir, columns=["source"]).column("source").to_pylist())
    images = read_images(out_dir, columns=["status", "num_masks"]).to_pylist()
    return {
        "masks_by_source": dict(sorted(sources.items())),
        "images_without_masks": sum(r["status"] == "ok" and not r["num_masks"] for r in images),
    }


class SemiWorker(AutoWorker):
    """The automatic stage's worker with detector boxes as SAM's prompts."""

    batches_images = False  # each image is prompted with its own boxes

    def __init__(self, cfg: dict, root: str):
        from data_engine.detector.model import load_detector
        from data_engine.semi.prefill import Prefiller

        super().__init__(cfg, root)
        detector = load_detector(cfg["detector"]["checkpoint"], cfg["detector"].get("device") or self.generator.device)
        self.prefiller = Prefiller(detector, self.generator, **{k: cfg["semi"][k] for k in PREFILL_KEYS})

    def image_masks(self, image, row: dict) -> list[dict]:
        """Prefilled masks of one image as rows of stage "semi" (source prefill or points_fill)."""
        return [
            mask_row(
                row,
                m.pop("segmentation"),
                stage="semi",
                source=m.pop("source"),
                model=self.model_name,
                extra=m.pop("extra"),
                **m,
            )
            for m in self.prefiller(image)
        ]
