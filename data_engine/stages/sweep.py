"""The sweep stage: the automatic stage's selection redone on a pilot run's stored candidates, no model.

A pilot is a stage=auto output made with amg.keep_candidates=true. For each setting of a grid of
pred_iou_thresh x stability_score_thresh x box_nms_thresh x min_mask_region_area x mask_nms_thresh x
verifier_thresh (each sweep.<key>: null for the pilot's value, a number, or a list), every image's
candidates go through the generator's own steps (amg/select.py), shard by shard as the pilot's;
verifier_thresh (a pilot with verifier.checkpoint: its candidates have verifier scores) drops those
scored below it with the thresholds. One setting writes an ordinary masks dataset (the pilot's own
settings give the pilot's masks exactly); any sweep writes grid/ (per image and setting: masks,
near-duplicates, matched pairs' IoU with sweep.expert's masks), sweep.json and sweep.html (a table, a
plot, and the setting reaching sweep.recall_target with the fewest masks).

The section imports without torch (composing any config imports it): the selection's modules (amg/) are
imported where the work is done.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_engine.audit.core import check_size
from data_engine.audit.load import AuditError, image_key, load_side
from data_engine.errors import ConfigError, require
from data_engine.io import rle
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import Dataset, shard_files, shard_path, write_atomic
from data_engine.io.hierarchy import parents
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.schema import absolute, setting

AXES = (
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "min_mask_region_area",
    "mask_nms_thresh",
    "verifier_thresh",
)
GRID = "grid"  # per-shard files of audit/sweep.py's image_row rows
PILOT = "give the output.dir of a stage=auto run made with amg.keep_candidates=true"


@dataclass(frozen=True)
class Sweep:
    pilot: str | None = setting(None, required=PILOT, exists="dir", hint=PILOT)  # the stage=auto run to re-select
    # Each axis of the grid: null (the pilot's value), a number, or a list of numbers
    pred_iou_thresh: float | list[float] | None = setting(None, ge=0, le=1)
    stability_score_thresh: float | list[float] | None = setting(None, ge=0, le=1)
    box_nms_thresh: float | list[float] | None = setting(None, ge=0, le=1)
    min_mask_region_area: int | list[int] | None = setting(None, ge=0)
    mask_nms_thresh: float | list[float | None] | None = setting(None, ge=0, le=1)  # null in a list: off, [null,0.9]
    # candidates scored below this by the pilot's verifier are dropped (needs a pilot with verifier.checkpoint);
    # null (also in a list): off
    verifier_thresh: float | list[float | None] | None = setting(None, ge=0, le=1)
    # the named setting: the fewest masks per image whose recall at IoU recall_at reaches this (needs expert)
    recall_target: float = setting(0.8, ge=0, le=1)
    recall_at: float = setting(0.5, choices=(0.5, 0.75, 0.9))
    near_duplicate_iou: float = setting(0.9, ge=0.01, le=1)  # masks overlapping another kept one at this IoU count
    # expert masks of the same images, for recall and pair IoU (a data-engine output or a COCO instances JSON)
    expert: str | None = setting(None, exists="path")
    match_by: str = setting("file_name", choices=("file_name", "image_id"))  # pair images by file_name or image_id
    min_iou: float = setting(0.0, ge=0, le=0.999)  # masks pair up only above this IoU (as audit.min_iou)
    # 0: only masks no other mask of their image holds, on both sides (whole objects, io/hierarchy.py); null: all
    max_depth: int | None = setting(None, ge=0)

    def check(self) -> None:
        for key in AXES:
            require(getattr(self, key) != [], f"sweep.{key}", "give a number, a list of them, or null for the pilot's")


def run(cfg: dict, settings: Sweep) -> dict:
    """Sweep the grid over the pilot's shards; resumes in the same output.dir."""
    settings = absolute(settings, ("pilot", "expert"))
    pilot = Dataset.open(settings.pilot, "sweep.pilot", PILOT, fingerprint=True)
    amg = pilot.run.get("amg", {})
    require(bool(amg.get("keep_candidates")), "sweep.pilot", f"{pilot.path} was run without candidates: {PILOT}")
    points = grid(settings, amg)
    check_floors(points, amg)
    check_verifier(points, pilot)
    out_dir, single = Path(cfg["output"]["dir"]), len(points) == 1
    job = ShardedJob(
        out_dir=out_dir,
        config=cfg,
        shards=pilot_shards(pilot),
        make_worker=partial(SweepWorker, settings, out_dir, amg, points, pilot.run["model"]["variant"]),
        runtime=cfg["runtime"],
        record={"pilot_fingerprint": pilot.record["fingerprint"], "input_root": pilot.record.get("input_root")},
        parts=("masks", "images", GRID) if single else (GRID,),
        extra_summary=partial(write_results, out_dir, amg, points, settings),
    )
    return run_job(job)


def axis(value, pilot) -> list:
    """A sweep key's values: null -> the pilot's, a list -> its items, a number -> itself."""
    if value is None:
        return [pilot]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def grid(settings: Sweep, amg: dict) -> list[dict]:
    """Every combination of the axes' values, the last axis fastest."""
    values = [axis(getattr(settings, key), amg.get(key)) for key in AXES]
    return [dict(zip(AXES, combo)) for combo in itertools.product(*values)]


def check_floors(points: list[dict], amg: dict) -> None:
    """The pilot kept no candidate under its floors: a threshold below one would miss masks."""
    floors = {
        "pred_iou_thresh": min(amg["pred_iou_thresh"], amg["candidate_iou_floor"]),
        "stability_score_thresh": min(amg["stability_score_thresh"], amg["candidate_stability_floor"]),
    }
    for key, floor in floors.items():
        low = min(p[key] for p in points)
        if low < floor:
            raise ConfigError(
                f"sweep.{key}: {low} is below the pilot's candidate floor {floor}; sweep at {floor} or above, or "
                f"rerun the pilot with a lower amg.candidate_{'iou' if key == 'pred_iou_thresh' else 'stability'}_floor"
            )


def check_verifier(points: list[dict], pilot: Dataset) -> None:
    """A verifier threshold needs the pilot's candidates to have verifier scores."""
    from data_engine.amg import candidates

    if all(p["verifier_thresh"] is None for p in points):
        return
    done = finished_shards(pilot)
    scored = bool((pilot.run.get("verifier") or {}).get("checkpoint")) and candidates.has_scores(pilot.path, done)
    require(
        scored,
        "sweep.verifier_thresh",
        f"the candidates of {pilot.path} have no verifier scores: rerun the pilot with verifier.checkpoint",
    )


def finished_shards(pilot: Dataset) -> list[str]:
    """The ids of the pilot's shards written whole and recorded done in its ledger, in shard order."""
    done = runs.read_ledger(pilot.path)
    return [shard_id for shard_id in pilot.shard_ids() if shard_id in done]


def pilot_shards(pilot: Dataset) -> list[dict]:
    """The pilot's finished shards, each with its images' file names."""
    return [
        {"shard_id": shard_id, "files": pilot.shard(shard_id, columns=["file_name"]).column(0).to_pylist()}
        for shard_id in finished_shards(pilot)
    ]


class SweepWorker:
    """One pilot shard -> grid rows for every setting (and with one setting, its masks and images)."""

    def __init__(self, settings: Sweep, out_dir: Path, amg: dict, points: list[dict], model: str):
        from data_engine.amg.select import Selection

        self.settings, self.out_dir, self.model = settings, out_dir, model
        self.pilot = Dataset.open(settings.pilot, "sweep.pilot", PILOT)
        self.selections = [Selection.of({**amg, **p}) for p in points]
        self.verifier_thresh = [p["verifier_thresh"] for p in points]
        self.crops = (amg["crop_n_layers"], amg["crop_overlap_ratio"])
        expert = settings.expert
        self.expert = load_side(expert, "expert", settings.match_by, max_depth=settings.max_depth) if expert else None

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        from data_engine.amg import candidates
        from data_engine.audit.sweep import ROW_SCHEMA

        start, shard_id = time.time(), shard["shard_id"]
        images = self.pilot.shard(shard_id).to_pylist()
        found = candidates.by_image(candidates.read(self.pilot.path, shard_id))
        results, rows = [], []
        for i, image in enumerate(images):
            began = time.time()
            masks = self.image_masks(image, found.get(image["image_id"]), rows)
            results.append(({**image, "num_masks": len(masks), "seconds": time.time() - began}, masks))
            on_image(shard_id, i, len(masks), image["status"] == "failed")
        write_atomic(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), shard_path(self.out_dir, GRID, shard_id))
        if len(self.selections) == 1:
            return runs.complete_shard(self.out_dir, shard_id, results, start)
        failed = sum(image["status"] == "failed" for image in images)
        stats = {"images": len(images), "masks": 0, "failed": failed, "seconds": round(time.time() - start, 3)}
        runs.mark_done(self.out_dir, shard_id, stats)
        return stats

    def image_masks(self, image: dict, found: dict | None, rows: list[dict]) -> list[dict]:
        """One pilot image at every setting: its grid rows (appended to `rows`), and its mask rows when
        there is one setting."""
        from data_engine.amg import candidates
        from data_engine.amg.generator import image_crops, records
        from data_engine.amg.worker import mask_rows
        from data_engine.audit.sweep import image_row

        if image["status"] != "ok":
            return []
        h, w = image["height"], image["width"]
        near_iou, min_iou = self.settings.near_duplicate_iou, self.settings.min_iou
        n_crops, expert, masks = len(image_crops((h, w), *self.crops)), self.expert_masks(image), []
        for point, selection in enumerate(self.selections):
            data = candidates.select(found, n_crops, h, w, selection, self.verifier_thresh[point])
            columns = records(data, h, w)
            if "verifier" in data and len(columns["segmentation"]):  # the candidates' scores, before clean-up
                columns["verifier_score"] = data["verifier"].tolist()
            counts = self.within_depth(columns["segmentation"], h, w)
            rows.append(image_row(point, image["image_id"], counts, expert, h, w, near_iou, min_iou))
            if len(self.selections) == 1:
                masks = mask_rows(columns, image, self.model, source="sweep")
        return masks

    def expert_masks(self, image: dict) -> list[str] | None:
        """The image's expert masks (RLE counts); None without an expert set or when it lacks the image."""
        key = image_key(image, self.settings.match_by)
        if self.expert is None or key not in self.expert["images"]:
            return None
        check_size(key, image, self.expert["images"][key])
        return [m["counts"] for m in self.expert["masks"].get(key, [])]

    def within_depth(self, counts: list[str], height: int, width: int) -> list[str]:
        """With sweep.max_depth, the masks no deeper in the image's hierarchy (io/hierarchy.py)."""
        if self.settings.max_depth is None:
            return counts
        _, depths = parents(counts, rle.area(counts, height, width), height, width)
        return [c for c, d in zip(counts, depths) if d <= self.settings.max_depth]


def write_results(out_dir: Path, amg: dict, points: list[dict], settings: Sweep, summary: dict) -> dict:
    """sweep.json and sweep.html from every shard's grid rows; the summary's extra fields."""
    from data_engine.audit.sweep import ROW_SCHEMA, best_point, grid_figures, write_page

    has_expert = settings.expert is not None
    files = [str(p) for p in shard_files(out_dir, GRID)]
    rows = pq.ParquetDataset(files, schema=ROW_SCHEMA).read().to_pylist() if files else []
    if has_expert and not any(r["expert_masks"] is not None for r in rows):
        raise AuditError("sweep.expert holds none of the pilot's images: give the expert masks of the same images")
    figures = grid_figures(rows, points, has_expert)
    best = best_point(figures, settings.recall_at, settings.recall_target) if has_expert else None
    own = {key: amg.get(key) for key in AXES}  # the pilot's own settings, which may be a grid point
    pilot = points.index(own) if own in points else None
    shown = {k: getattr(settings, k) for k in ("pilot", "recall_at", "recall_target", "near_duplicate_iou")}
    doc = {"settings": shown, "axes": list(AXES), "points": figures, "best": best, "pilot": pilot}
    write_text_atomic(json.dumps(doc, indent=2), out_dir / "sweep.json")
    write_page(out_dir / "sweep.html", figures, list(AXES), best, pilot, shown)
    return {
        "points": len(points),
        "best": None if best is None else figures[best],
        "table": str(out_dir / "sweep.json"),
        "page": str(out_dir / "sweep.html"),
    }
