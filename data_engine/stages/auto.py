"""The fully-automatic stage as a job: inputs -> shards -> masks/ and images/ Parquet tables."""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from pathlib import Path

from data_engine.io import inputs
from data_engine.io.dataset import mask_row
from data_engine.io.images import load_rgb
from data_engine.runtime import runs
from data_engine.runtime.executor import run_shards

log = logging.getLogger(__name__)


def run(cfg: dict) -> dict:
    """Generate masks for every input image; resumes an interrupted run in the same output.dir."""
    start = time.time()
    root, names, ignored = inputs.list_inputs(cfg["input"]["path"], cfg["input"]["extensions"])
    if ignored:
        log.warning(
            "%d files under %s are not images by extension and were ignored (first: %s)", len(ignored), root, ignored[0]
        )
    out_dir = Path(cfg["output"]["dir"])
    shards = inputs.make_shards(names, cfg["input"]["shard_size"])
    runs.prepare_output(
        out_dir,
        cfg,
        {"model": model_record(cfg), "input_root": str(root), "inputs": len(names), "ignored_files": ignored},
    )
    todo = runs.pending(shards, out_dir)
    log.info("%d images in %d shards; %d shards to do", len(names), len(shards), len(todo))
    failed = run_shards(todo, partial(AutoWorker, cfg, str(root)), cfg["runtime"])
    summary = runs.summarize(out_dir, shards, failed, time.time() - start)
    if cfg["output"].get("overlays"):
        from data_engine.io.overlays import write_overlays

        summary["overlays"] = write_overlays(out_dir, root, cfg["output"]["overlays"])
    return summary


def model_record(cfg: dict) -> dict:
    """Variant and weight checksum, recorded with the run and checked on resume."""
    from data_engine.model.build import load_checkpoint, model_checksum, resolve_checkpoint, seeded_sam, sha256_file

    m = cfg["model"]
    path = resolve_checkpoint(m["variant"], m["checkpoint"], m["download"], m["cache_dir"])
    sam = seeded_sam(m["variant"])
    if path is None:
        return {"variant": m["variant"], "checkpoint": None, "sha256": model_checksum(sam)}
    load_checkpoint(sam, m["variant"], path)  # fail here, before any worker starts
    return {"variant": m["variant"], "checkpoint": str(path), "sha256": sha256_file(path)}


def model_args(cfg: dict) -> dict:
    m = cfg["model"]
    return {
        "variant": m["variant"],
        "checkpoint": m["checkpoint"],
        "download": m["download"],
        "cache_dir": m["cache_dir"],
    }


class AutoWorker:
    """Loads the model once; turns a shard of image files into its Parquet files."""

    def __init__(self, cfg: dict, root: str):
        from data_engine.amg.generator import MaskGenerator
        from data_engine.model.build import build_sam

        self.cfg, self.root, self.out_dir = cfg, Path(root), Path(cfg["output"]["dir"])
        self.model_name = cfg["model"]["variant"]
        sam = build_sam(**model_args(cfg), device=cfg["model"]["device"])
        self.generator = MaskGenerator(sam, **cfg["amg"])

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        start, results = time.time(), []
        for i, name in enumerate(shard["files"]):
            self._maybe_crash(shard["shard_id"], i)
            results.append(self.process_image(name))
            on_image(shard["shard_id"], i, len(results[-1][1]), results[-1][0]["status"] == "failed")
        return runs.complete_shard(self.out_dir, shard["shard_id"], results, start, self.generator.device)

    def process_image(self, name: str) -> tuple[dict, list[dict]]:
        """One image row (ok or failed with its reason) and its mask rows."""
        start = time.time()
        row = {"image_id": inputs.image_id(name), "file_name": name, "num_masks": 0}
        try:
            image = load_rgb(resolve(self.root, name), self.cfg["input"]["max_pixels"])
            row.update(height=image.shape[0], width=image.shape[1])
            masks = self.image_masks(image, row)
        except Exception as err:  # per-image boundary: one bad file never stops the shard
            log.warning("%s failed: %s", name, err)
            row.update(status="failed", error=f"{type(err).__name__}: {err}", seconds=time.time() - start)
            return row, []
        row.update(status="ok", error=None, num_masks=len(masks), seconds=time.time() - start)
        return row, masks

    def image_masks(self, image, row: dict) -> list[dict]:
        """The mask rows of one decoded image (a stage built on this worker prompts differently)."""
        return mask_rows(self.generator.generate(image), row, self.model_name)

    def _maybe_crash(self, shard_id: str, index: int) -> None:
        """Fault injection: the process exits mid-shard, once per output dir (debug.crash_on_shard) or on
        every attempt (debug.kill_on_shard)."""
        if self.cfg["debug"].get("kill_on_shard") == shard_id:
            os._exit(18)
        if self.cfg["debug"]["crash_on_shard"] != shard_id or index != 1:
            return
        marker = self.out_dir / "_debug" / f"crashed-{shard_id}"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os._exit(17)


def resolve(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


def mask_rows(generated: dict, image: dict, model: str) -> list[dict]:
    """Generator columns -> one row per mask with the image's fields."""
    fields = [k for k in generated if k != "segmentation"]
    return [
        mask_row(image, counts, stage="auto", source="auto", model=model, **{k: generated[k][i] for k in fields})
        for i, counts in enumerate(generated["segmentation"])
    ]
