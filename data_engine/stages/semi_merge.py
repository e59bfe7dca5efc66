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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_engine.errors import require
from data_engine.importers import FORMATS, import_annotations
from data_engine.importers.results import IMPORTED, REJECTED, inputs_digest, write_report
from data_engine.io import inputs
from data_engine.io.dataset import Dataset, image_row, shard_files, shard_path, table, write_atomic
from data_engine.io.inputs import read_json
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.schema import absolute, setting
from data_engine.semi.merge import COUNTS, merge_image, totals

log = logging.getLogger(__name__)

MERGE_SCHEMA = pa.schema(
    [("image_id", pa.int64()), ("file_name", pa.string()), ("status", pa.string())] + [(k, pa.int32()) for k in COUNTS]
)


SEMI_RUN = "give the output.dir of a stage=semi run"
PATHS = ("prefill", "annotations", "image_root")


@dataclass(frozen=True)
class SemiMerge:
    prefill: str | None = setting(
        None, required=SEMI_RUN, exists="dir"
    )  # the stage=semi output.dir annotators worked on
    # the annotators' export: labelstudio | cvat_xml | coco (any stage-1 importer format)
    format: str = setting("labelstudio", choices=tuple(FORMATS))
    # the exported file or folder
    annotations: str | None = setting(None, required="give the annotators' exported file or folder", exists="path")
    image_root: str | None = setting(None, exists="path")  # the images' folder; null: the prefill run's input folder
    # an annotator mask at this IoU or more with an unmatched prefilled mask is that mask, edited
    edit_iou: float = setting(0.5, gt=0, le=1)

    def check(self) -> None:
        require(
            (Path(self.prefill).expanduser() / "run.json").is_file(),
            "semi_merge.prefill",
            f"{self.prefill} holds no run.json: {SEMI_RUN}",
        )


def run(cfg: dict, settings: SemiMerge) -> dict:
    """Import the annotators' export, merge it image by image; resumes in the same output.dir."""
    settings = absolute(settings, PATHS)
    prefill = Dataset.open(
        settings.prefill,
        "semi_merge.prefill",
        what_to_do="give the output.dir of a stage=semi run",
        fingerprint=True,
        image_root=settings.image_root,
    )
    image_root = str(prefill.image_root) if prefill.image_root else None
    max_pixels, follow = cfg["input"]["max_pixels"], cfg["input"]["follow_symlinks"]
    rows, report = import_annotations(settings.format, settings.annotations, image_root, max_pixels, follow)
    images = sorted(prefill.images().to_pylist(), key=lambda r: r["file_name"])
    drawn = assign(rows, report, images)
    out_dir = Path(cfg["output"]["dir"])
    record = {
        "prefill_fingerprint": prefill.record["fingerprint"],
        "annotations_sha256": inputs_digest(settings.annotations),
        "input_root": image_root,  # where the train stage finds this output's images
    }
    prefilled = group(prefill.masks().to_pylist())
    shards = inputs.make_shards([img["file_name"] for img in images], cfg["input"]["shard_size"])
    by_name = {img["file_name"]: img for img in images}

    def merge_totals(summary: dict) -> dict:
        files = [str(p) for p in shard_files(out_dir, "merge")]
        per_image = pq.ParquetDataset(files).read().to_pylist() if files else []
        routes = prefill_routes(prefill.path)
        return {"merge": totals(per_image), "import": write_report(out_dir, report), **routes}

    job = ShardedJob(
        out_dir=out_dir,
        config=cfg,
        shards=shards,
        make_worker=partial(MergeWorker, out_dir, by_name, prefilled, drawn, settings.edit_iou),
        runtime=cfg["runtime"],
        record=record,
        parts=("masks", "images", "merge"),
        extra_summary=merge_totals,
    )
    return run_job(job)


def prefill_routes(prefill: Path) -> dict:
    """{"routes": accepted, review and rejected masks} of a prefill routed by a verifier (its summary's
    masks_by_route: rejected masks were not written), else {}."""
    path = prefill / "summary.json"
    routes = read_json(path, "summary").get("masks_by_route") if path.is_file() else None
    return {"routes": routes} if routes else {}


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
            t0, image = time.time(), self.images[name]
            counts = dict.fromkeys(COUNTS, 0)
            rows = []
            if image["status"] == "ok":
                rows, counts = merge_image(image, self.prefilled.get(name, []), self.drawn.get(name, []), self.edit_iou)
            results.append((image_row(image, len(rows), time.time() - t0, image["error"]), rows))
            per_image.append({"image_id": image["image_id"], "file_name": name, "status": image["status"], **counts})
            on_image(shard["shard_id"], i, len(rows), image["status"] == "failed")
        write_atomic(table(per_image, MERGE_SCHEMA), shard_path(self.out_dir, "merge", shard["shard_id"]))
        return runs.complete_shard(self.out_dir, shard["shard_id"], results, start)
