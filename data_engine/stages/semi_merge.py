"""Stage 2's human pass merged back: the annotators' export matched to the prefilled masks, image by image.

The export is read by stage 1's importers, matched to the prefill run's masks (data_engine.semi.merge)
and written in the dataset layout.

Outputs in output.dir: masks/ and images/ (stage "semi"; source prefill_kept, prefill_edited,
annotator or prefill_accepted), merge/ (one row per image: prefilled, shown, kept, edited, deleted,
added, accepted, accepted_replaced, masks before and after), import_report.parquet (every annotation
of the export: imported, or rejected with its reason, including annotations of images that are not
ok images of the prefill run or whose size differs), and summary.json with the overall counts (and,
for a prefill routed by a verifier, its masks by route).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_engine.errors import ConfigError, check_number, check_path, require
from data_engine.importers import FORMATS, import_annotations
from data_engine.importers.results import IMPORTED, REJECTED, inputs_digest, write_report
from data_engine.io import inputs
from data_engine.io.dataset import (
    read_images,
    read_masks,
    read_run_record,
    shard_files,
    shard_path,
    table,
    write_atomic,
)
from data_engine.io.inputs import read_json
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.semi.merge import COUNTS, merge_image, totals

log = logging.getLogger(__name__)

MERGE_SCHEMA = pa.schema(
    [("image_id", pa.int64()), ("file_name", pa.string()), ("status", pa.string())] + [(k, pa.int32()) for k in COUNTS]
)


def run(cfg: dict) -> dict:
    """Import the annotators' export, merge it image by image; resumes in the same output.dir."""
    m = check(cfg["semi_merge"])
    prefill = Path(m["prefill"])
    prefill_run = read_run_record(
        prefill, "semi_merge.prefill", "give the output.dir of a stage=semi run", fingerprint=True
    )
    image_root = m["image_root"] or prefill_run.get("input_root")
    i = cfg["input"]
    rows, report = import_annotations(m["format"], m["annotations"], image_root, i["max_pixels"], i["follow_symlinks"])
    images = sorted(read_images(prefill).to_pylist(), key=lambda r: r["file_name"])
    drawn = assign(rows, report, images)
    out_dir = Path(cfg["output"]["dir"])
    record = {
        "prefill_fingerprint": prefill_run["fingerprint"],
        "annotations_sha256": inputs_digest(m),
        "input_root": image_root,  # where the train stage finds this output's images
    }
    prefilled = group(read_masks(prefill).to_pylist())
    shards = inputs.make_shards([img["file_name"] for img in images], cfg["input"]["shard_size"])
    by_name = {img["file_name"]: img for img in images}

    def merge_totals(summary: dict) -> dict:
        files = [str(p) for p in shard_files(out_dir, "merge")]
        per_image = pq.ParquetDataset(files).read().to_pylist() if files else []
        routes = prefill_routes(prefill)
        return {"merge": totals(per_image), "import": write_report(out_dir, report), **routes}

    job = ShardedJob(
        out_dir=out_dir,
        config=cfg,
        shards=shards,
        make_worker=partial(MergeWorker, out_dir, by_name, prefilled, drawn, m["edit_iou"]),
        runtime=cfg["runtime"],
        record=record,
        parts=("masks", "images", "merge"),
        extra_summary=merge_totals,
    )
    return run_job(job)


def prefill_routes(prefill: Path) -> dict:
    """{"routes": accepted, review and rejected masks} of a prefill routed by a verifier, else {}."""
    path = prefill / "summary.json"
    routes = read_json(path, "summary").get("masks_by_route") if path.is_file() else None
    return {"routes": routes} if routes else {}


def check(m: dict) -> dict:
    """The semi_merge section with absolute paths, or a ConfigError naming the key."""
    require(bool(m["prefill"]), "semi_merge.prefill", "give the output.dir of a stage=semi run")
    check_path(m, "semi_merge.prefill")
    require(
        (Path(m["prefill"]).expanduser() / "run.json").is_file(),
        "semi_merge.prefill",
        f"{m['prefill']} holds no run.json: give the output.dir of a stage=semi run",
    )
    require(m["format"] in FORMATS, "semi_merge.format", f"must be one of {sorted(FORMATS)}, got {m['format']!r}")
    require(bool(m["annotations"]), "semi_merge.annotations", "give the annotators' exported file or folder")
    check_path(m, "semi_merge.annotations")
    check_path(m, "semi_merge.image_root", nullable=True)
    check_number(m, "semi_merge.edit_iou", 0, 1)
    if m["edit_iou"] == 0:
        raise ConfigError("semi_merge.edit_iou: must be above 0 (0 would pair masks that do not overlap)")
    paths = {
        k: str(Path(m[k]).expanduser().resolve()) if m[k] else None for k in ("prefill", "annotations", "image_root")
    }
    return {**m, **paths}


def assign(rows: list[dict], report: list[dict], images: list[dict]) -> dict[str, list[dict]]:
    """Annotator rows by file name; an annotation of an image that is not an ok image of the prefill run,
    or of another size, is turned into a rejection in `report` (rows and imported report rows pair up
    in order, as every importer writes them)."""
    known = {img["file_name"]: img for img in images}
    drawn: dict[str, list[dict]] = {}
    pending = iter(rows)
    for entry in report:
        if entry["status"] != IMPORTED:
            continue
        row = next(pending)
        reason = mismatch(row, known.get(row["file_name"]))
        if reason:
            entry.update(status=REJECTED, reason=reason)
        else:
            drawn.setdefault(row["file_name"], []).append(row)
    return drawn


def mismatch(row: dict, image: dict | None) -> str | None:
    """Why an annotator mask cannot join the prefill run's image (None: it can)."""
    if image is None:
        return f"unknown image: {row['file_name']} is not an image of the prefill run"
    if image["status"] != "ok":
        return f"failed image: {row['file_name']} failed in the prefill run ({image['error']})"
    if (row["height"], row["width"]) != (image["height"], image["width"]):
        return (
            f"size mismatch: annotation says {row['width']}x{row['height']}, "
            f"the prefill run's image is {image['width']}x{image['height']}"
        )
    return None


def group(rows: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["file_name"], []).append(row)
    return found


class MergeWorker:
    """Merges a shard of images: merged masks/ and images/, its merge/ counts, then its done marker."""

    def __init__(self, out_dir: Path, images: dict, prefilled: dict, drawn: dict, edit_iou: float):
        self.out_dir, self.images, self.prefilled, self.drawn, self.edit_iou = (
            out_dir,
            images,
            prefilled,
            drawn,
            edit_iou,
        )

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        start, results, per_image = time.time(), [], []
        for i, name in enumerate(shard["files"]):
            t0, image = time.time(), dict(self.images[name])
            counts = dict.fromkeys(COUNTS, 0)
            rows = []
            if image["status"] == "ok":
                rows, counts = merge_image(image, self.prefilled.get(name, []), self.drawn.get(name, []), self.edit_iou)
            image.update(num_masks=len(rows), seconds=time.time() - t0)
            results.append((image, rows))
            per_image.append({"image_id": image["image_id"], "file_name": name, "status": image["status"], **counts})
            on_image(shard["shard_id"], i, len(rows), image["status"] == "failed")
        write_atomic(table(per_image, MERGE_SCHEMA), shard_path(self.out_dir, "merge", shard["shard_id"]))
        return runs.complete_shard(self.out_dir, shard["shard_id"], results, start)
