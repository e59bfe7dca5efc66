"""Quality of each model of the loop on a held-out expert set: the engine command's model, then every
retrained one (each train step's model.pt).

Two figures of SAM's paper, on the expert set's images and exact masks:
- single-point mean IoU (`train.evaluate.point_figures`: one point at the innermost pixel of each
  object of >= min_area px, best of the 3 masks) and the correlation of predicted with true IoU;
- the automatic stage's recall: the generator (the engine command's amg settings with `evaluate.amg`
  over them) on each image, its masks audited against the expert masks as the audit stage does
  (`audit.core.audit`: one-to-one matching), giving recall at IoU 0.5 and 0.75 and masks per image.

Figures are kept in OUT/_engine/eval/<model>.json with the hash of what made them (the model's step,
the settings, the expert set), so a rerun reuses them and a change recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path

from data_engine.io.atomic import write_text_atomic
from data_engine.stages.engine import Evaluate

log = logging.getLogger(__name__)

INITIAL = "initial"


def candidates(cfg: dict, steps: list[dict]) -> list[dict]:
    """The models to evaluate: the engine command's, then each train step's model.pt."""
    models = [{"name": INITIAL, "model": cfg["model"], "checkpoint": cfg["model"]["checkpoint"], "step": None}]
    for step in steps:
        if step["stage"] == "train":
            checkpoint = str(Path(step["dir"]) / "model.pt")
            models.append({"name": step["name"], "model": step["cfg"]["model"], "checkpoint": checkpoint, "step": step})
    return models


def models(cfg: dict, steps: list[dict], settings: Evaluate, out_dir: Path, record_of) -> None:
    """Evaluate every model whose step is done and whose figures are missing or out of date."""
    experts = next(s for s in steps if s["name"] == settings.experts)
    if not done(record_of(experts), experts):
        return
    amg = {**cfg["amg"], **settings.amg}
    for model in candidates(cfg, steps):
        if model["step"] is not None and not done(record_of(model["step"]), model["step"]):
            continue
        key = figures_hash(model, settings, amg, experts)
        path = out_dir / "_engine" / "eval" / f"{model['name']}.json"
        if path.is_file() and json.loads(path.read_text())["hash"] == key:
            continue
        log.info("engine: evaluating model %s on the expert set of %s", model["name"], experts["folder"])
        figures = model_figures(model, experts["dir"], settings, amg)
        write_text_atomic(json.dumps({"hash": key, "model": model["name"], "figures": figures}, indent=2), path)


def done(record: dict | None, step: dict) -> bool:
    return record is not None and record["status"] == "done" and record["hash"] == step["hash"]


def figures_hash(model: dict, settings: Evaluate, amg: dict, experts: dict) -> str:
    """What the figures depend on: the model (its step's hash, or the engine's model settings), the
    evaluation settings and the expert set's step."""
    made_by = model["step"]["hash"] if model["step"] else model["model"]
    doc = [made_by, {"max_images": settings.max_images, "min_area": settings.min_area}, amg, experts["hash"]]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def forget(out_dir: Path, name: str) -> None:
    (out_dir / "_engine" / "eval" / f"{name}.json").unlink(missing_ok=True)


def read(out_dir: Path, name: str) -> dict | None:
    path = out_dir / "_engine" / "eval" / f"{name}.json"
    return json.loads(path.read_text())["figures"] if path.is_file() else None


# ----------------------------------------------------------------------------------------------
# The figures
# ----------------------------------------------------------------------------------------------


def model_figures(model: dict, experts_dir: str, settings: Evaluate, amg: dict) -> dict:
    """Single-point and automatic-stage figures of one model on the expert set."""
    from data_engine.model.build import build_sam
    from data_engine.train.evaluate import point_figures

    built = model["model"]
    sam = build_sam(
        built["variant"],
        checkpoint=model["checkpoint"],
        download=False,
        device=built["device"],
        image_size=built.get("image_size"),
    )
    scenes, expert_side = expert_set(experts_dir, settings.max_images)
    point = point_figures(sam, scenes, min_area=settings.min_area)
    auto = automatic_figures(sam, scenes, expert_side, amg)
    return {
        "point_miou": point["point_miou"],
        "iou_correlation": point["iou_correlation"],
        "point_prompts": point["point_prompts"],
        **auto,
    }


def automatic_figures(sam, scenes: list[dict], expert_side: dict, amg: dict) -> dict:
    """The generator on every scene, audited against the expert masks: recall at 0.5 and 0.75."""
    from data_engine.amg.generator import mask_generator
    from data_engine.audit.core import audit
    from data_engine.audit.load import mask_record

    generator = mask_generator(sam, **amg)
    masks = {}
    for scene in scenes:
        out = generator.generate(scene["image"])
        masks[scene["key"]] = [
            mask_record(mask_id=k, counts=counts, area=area, score=score, stage="auto", source="auto")
            for k, (counts, area, score) in enumerate(zip(out["segmentation"], out["area"], out["predicted_iou"]))
        ]
    pred_side = {"images": expert_side["images"], "masks": masks, "failed": [], "path": "generated"}
    m = audit(pred_side, expert_side, worst_k=0)["metrics"]
    return {
        "recall@0.5": m["recall@0.5"],
        "recall@0.75": m["recall@0.75"],
        "matched_mean_iou": m["mean_iou"],
        "masks_per_image": m["pred_masks"] / max(len(scenes), 1),
        "expert_masks": m["expert_masks"],
        "images": len(scenes),
    }


@lru_cache(maxsize=2)
def expert_set(experts_dir: str, max_images: int) -> tuple[list[dict], dict]:
    """The first max_images images of the expert output (by file name) as scenes {key, image, height,
    width, objects: [{mask, level}]} for point prompts, and as an audit side for the generator."""
    from data_engine.audit.load import load_side
    from data_engine.io import rle
    from data_engine.io.images import load_rgb
    from data_engine.train.data import parquet_image_root

    side = load_side(experts_dir, "expert")
    keys = sorted(side["images"], key=str)[:max_images]
    side = {
        **side,
        "images": {k: side["images"][k] for k in keys},
        "masks": {k: side["masks"].get(k, []) for k in keys},
    }
    root = parquet_image_root(Path(experts_dir))
    scenes = []
    for key in keys:
        img = side["images"][key]
        h, w = img["height"], img["width"]
        objects = [{"mask": rle.decode(m["counts"], h, w), "level": "whole"} for m in side["masks"][key]]
        scenes.append(
            {
                "key": key,
                "image": load_rgb(root / img["file_name"], 1 << 40),
                "height": h,
                "width": w,
                "objects": objects,
            }
        )
    return scenes, side
