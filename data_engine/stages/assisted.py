"""The assisted-manual stage: human annotations and replayed click sessions -> masks/ and images/ Parquet.

Imports run in the driver (they only parse files); shards of images then run on Ray like the auto
stage: human masks pass through, click objects are replayed through SAM (one embedding per image).
Every input annotation lands in output.dir/import_report.parquet as imported or rejected-with-reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from data_engine.errors import require
from data_engine.importers import FORMATS, clicks, import_annotations
from data_engine.importers.results import inputs_digest, write_report
from data_engine.io import inputs
from data_engine.io.dataset import image_row
from data_engine.io.images import load_rgb
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.schema import absolute, setting

log = logging.getLogger(__name__)

PATHS = ("annotations", "clicks", "image_root")  # made absolute: the run records them, the workers read them


@dataclass(frozen=True)
class Assisted:
    format: str = setting("coco", choices=tuple(FORMATS))  # the annotation tool's export format
    annotations: str | None = setting(None, exists="path")  # the exported file or folder (null: clicks only)
    # folder the image names are relative to; null: declared sizes trusted, no file checks
    image_root: str | None = setting("${input.path}", exists="path")
    clicks: str | None = setting(None, exists="path")  # click-session JSON to replay through SAM (needs image_root)

    def check(self) -> None:
        require(
            bool(self.annotations or self.clicks),
            "assisted.annotations",
            "give an annotation file or folder, and/or assisted.clicks",
        )
        require(
            not self.clicks or bool(self.image_root),
            "assisted.clicks",
            "replaying clicks needs the images: set assisted.image_root (or input.path)",
        )


def run(cfg: dict, settings: Assisted) -> dict:
    """Import, replay and write; resumes an interrupted run in the same output.dir."""
    from data_engine.model.build import model_record

    settings = absolute(settings, PATHS)
    rows, objects, report = import_inputs(settings, cfg["input"]["max_pixels"], cfg["input"]["follow_symlinks"])
    out_dir = Path(cfg["output"]["dir"])
    shards = make_shards(group_by_image(rows, objects), cfg["input"]["shard_size"])
    log.info(
        "%d masks and %d click objects on %d images", len(rows), len(objects), sum(len(s["files"]) for s in shards)
    )

    def report_and_overlays(summary: dict) -> dict:
        extra = {"import": write_report(out_dir, report)}
        if cfg["output"].get("overlays") and settings.image_root:
            from data_engine.io.overlays import write_overlays

            extra["overlays"] = write_overlays(out_dir, Path(settings.image_root), cfg["output"]["overlays"])
        return extra

    job = ShardedJob(
        out_dir=out_dir,
        config=cfg,
        shards=shards,
        make_worker=partial(AssistedWorker, cfg, settings.image_root),
        runtime=cfg["runtime"],
        record={
            "model": model_record(cfg["model"]) if objects else None,
            "inputs_sha256": inputs_digest(settings.annotations, settings.clicks),
            "input_root": settings.image_root,  # where the train stage finds this output's images
        },
        extra_summary=report_and_overlays,
    )
    return run_job(job)


def import_inputs(settings: Assisted, max_pixels: int, follow: bool) -> tuple[list[dict], list[dict], list[dict]]:
    """(human mask rows, click objects, report rows of both); images above max_pixels, and without `follow`
    (input.follow_symlinks) images that are symlinks leaving the image root, are rejected."""
    root, annotations, click_file = settings.image_root, settings.annotations, settings.clicks
    rows, report = (
        import_annotations(settings.format, annotations, root, max_pixels, follow) if annotations else ([], [])
    )
    objects, click_report = clicks.read(click_file, root, max_pixels, follow) if click_file else ([], [])
    return rows, objects, report + click_report


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
        image = {**item, "image_id": inputs.image_id(item["file_name"])}
        rows, error = list(item["masks"]), None
        if item["objects"]:
            try:
                rows += self.replay(item)
            except Exception as err:  # per-image boundary: one bad image never stops the shard
                log.warning("click replay on %s failed: %s", item["file_name"], err)
                error = f"click replay: {type(err).__name__}: {err}"
        return image_row(image, num_masks=len(rows), seconds=time.time() - start, error=error), rows

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
            from data_engine.model.build import build_sam, model_args
            from data_engine.model.click_replay import ClickReplayer

            self.replayer = ClickReplayer(
                build_sam(**model_args(self.cfg["model"]), device=self.cfg["model"]["device"])
            )
        return self.replayer
