"""The assisted-manual stage: human annotations and replayed click sessions -> masks/ and images/ Parquet.

Imports run in the driver (they only parse files); shards of images then run on Ray like the auto
stage: human masks pass through, click objects are replayed through SAM (one embedding per image).
Every input annotation lands in output.dir/import_report.parquet as imported or rejected-with-reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from functools import partial
from pathlib import Path

import pyarrow as pa

from data_engine.errors import check_choice, check_path, require
from data_engine.importers import FORMATS, clicks, import_annotations
from data_engine.importers.results import summarize as summarize_report
from data_engine.io import inputs
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import table, write_atomic
from data_engine.io.images import load_rgb
from data_engine.runtime import runs
from data_engine.runtime.executor import run_shards
from data_engine.stages.auto import model_args, model_record

log = logging.getLogger(__name__)

REPORT_SCHEMA = pa.schema(
    [
        ("format", pa.string()),
        ("file", pa.string()),
        ("annotation", pa.string()),
        ("image", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)


def run(cfg: dict) -> dict:
    """Import, replay and write; resumes an interrupted run in the same output.dir."""
    start = time.time()
    a = check(cfg["assisted"])
    rows, objects, report = import_inputs(a, cfg["input"]["max_pixels"], cfg["input"]["follow_symlinks"])
    out_dir = Path(cfg["output"]["dir"])
    runs.prepare_output(
        out_dir,
        cfg,
        {
            "model": model_record(cfg) if objects else None,
            "inputs_sha256": inputs_digest(a),
            "input_root": a["image_root"],  # where the train stage finds this output's images
        },
    )
    report_summary = write_report(out_dir, report)
    shards = make_shards(group_by_image(rows, objects), cfg["input"]["shard_size"])
    todo = runs.pending(shards, out_dir)
    log.info(
        "%d masks and %d click objects on %d images in %d shards; %d shards to do",
        len(rows),
        len(objects),
        sum(len(s["files"]) for s in shards),
        len(shards),
        len(todo),
    )
    failed = run_shards(todo, partial(AssistedWorker, cfg, a["image_root"]), cfg["runtime"])
    summary = {**runs.summarize(out_dir, shards, failed, time.time() - start), "import": report_summary}
    if cfg["output"].get("overlays") and a["image_root"]:
        from data_engine.io.overlays import write_overlays

        summary["overlays"] = write_overlays(out_dir, Path(a["image_root"]), cfg["output"]["overlays"])
    write_text_atomic(json.dumps(summary, indent=2), out_dir / "summary.json")
    return summary


def check(a: dict) -> dict:
    """The assisted section with absolute paths; every error names the key and what to do."""
    check_choice(a, "assisted.format", FORMATS)
    require(
        bool(a.get("annotations") or a.get("clicks")),
        "assisted.annotations",
        "give an annotation file or folder, and/or assisted.clicks",
    )
    require(
        not a.get("clicks") or bool(a.get("image_root")),
        "assisted.clicks",
        "replaying clicks needs the images: set assisted.image_root (or input.path)",
    )
    for key in ("annotations", "clicks", "image_root"):
        check_path(a, f"assisted.{key}", nullable=True)
    paths = {
        key: str(Path(a[key]).expanduser().resolve()) if a.get(key) else None
        for key in ("annotations", "clicks", "image_root")
    }
    return {**a, **paths}


def import_inputs(a: dict, max_pixels: int, follow: bool) -> tuple[list[dict], list[dict], list[dict]]:
    """(human mask rows, click objects, report rows of both); images above max_pixels, and without `follow`
    (input.follow_symlinks) images that are symlinks leaving the image root, are rejected."""
    fmt, root = a["format"], a["image_root"]
    rows, report = import_annotations(fmt, a["annotations"], root, max_pixels, follow) if a["annotations"] else ([], [])
    objects, click_report = clicks.read(a["clicks"], root, max_pixels, follow) if a["clicks"] else ([], [])
    return rows, objects, report + click_report


def inputs_digest(a: dict) -> str:
    """SHA-256 of the annotation and click inputs (files by content, folders by names, sizes and times)."""
    h = hashlib.sha256()
    for key in ("annotations", "clicks"):
        if a.get(key):
            path = Path(a[key]).expanduser()
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for p in files:
                stat = p.stat()
                h.update(f"{p}:{stat.st_size}:{stat.st_mtime_ns}".encode() if path.is_dir() else p.read_bytes())
    return h.hexdigest()


def write_report(out_dir: Path, report: list[dict]) -> dict:
    """import_report.parquet (one row per input annotation) and its counts."""
    write_atomic(table(report, REPORT_SCHEMA), out_dir / "import_report.parquet")
    return summarize_report(report)


def group_by_image(rows: list[dict], objects: list[dict]) -> list[dict]:
    """One work item per image, in file-name order: its human mask rows and its click objects."""
    items: dict[str, dict] = {}
    for kind, entries in (("masks", rows), ("objects", objects)):
        for entry in entries:
            item = items.setdefault(
                entry["file_name"],
                {
                    "file_name": entry["file_name"],
                    "height": entry["height"],
                    "width": entry["width"],
                    "masks": [],
                    "objects": [],
                },
            )
            item[kind].append(entry)
    return [items[name] for name in sorted(items)]


def make_shards(items: list[dict], shard_size: int) -> list[dict]:
    """Deterministic shards of `shard_size` images: shard-00000, shard-00001, ..."""
    shards = inputs.make_shards([it["file_name"] for it in items], shard_size)
    for n, shard in enumerate(shards):
        shard["items"] = items[n * shard_size : (n + 1) * shard_size]
    return shards


class AssistedWorker:
    """Builds SAM once, on the first image with clicks; turns a shard of images into its Parquet files."""

    def __init__(self, cfg: dict, image_root: str | None):
        self.cfg, self.out_dir = cfg, Path(cfg["output"]["dir"])
        self.root = Path(image_root) if image_root else None
        self.replayer = None

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        start, results = time.time(), []
        for i, item in enumerate(shard["items"]):
            results.append(self.process_image(item))
            on_image(shard["shard_id"], i, len(results[-1][1]), results[-1][0]["status"] == "failed")
        device = self.replayer.predictor.device if self.replayer else None  # no clicks yet: no model
        return runs.complete_shard(self.out_dir, shard["shard_id"], results, start, device)

    def process_image(self, item: dict) -> tuple[dict, list[dict]]:
        """The image row and its mask rows; a failed replay keeps the human masks and records why."""
        start = time.time()
        row = {
            "image_id": inputs.image_id(item["file_name"]),
            "file_name": item["file_name"],
            "height": item["height"],
            "width": item["width"],
            "status": "ok",
            "error": None,
        }
        rows = list(item["masks"])
        if item["objects"]:
            try:
                rows += self.replay(item)
            except Exception as err:  # per-image boundary: one bad image never stops the shard
                log.warning("click replay on %s failed: %s", item["file_name"], err)
                row.update(status="failed", error=f"click replay: {type(err).__name__}: {err}")
        row.update(num_masks=len(rows), seconds=time.time() - start)
        return row, rows

    def replay(self, item: dict) -> list[dict]:

        image = load_rgb(self.root / item["file_name"], self.cfg["input"]["max_pixels"])
        if image.shape[:2] != (item["height"], item["width"]):
            raise ValueError(
                f"image is {image.shape[1]}x{image.shape[0]}, the annotations say {item['width']}x{item['height']}"
            )
        results = self.get_replayer().replay_image(image, item["objects"])
        model = self.cfg["model"]["variant"]
        return [clicks.click_row(obj, result, model) for obj, result in zip(item["objects"], results)]

    def get_replayer(self):
        if self.replayer is None:
            from data_engine.model.build import build_sam
            from data_engine.model.click_replay import ClickReplayer

            self.replayer = ClickReplayer(build_sam(**model_args(self.cfg), device=self.cfg["model"]["device"]))
        return self.replayer
