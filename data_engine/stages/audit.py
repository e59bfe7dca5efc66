"""The audit stage: generated masks against expert masks -> metrics.json, pairs.parquet, report.html.

When the generated masks carry a verifier_score (verifier.checkpoint on stage=auto or stage=semi),
metrics.json and the report add the verifier's calibration: per score bin, the share of masks that
match an expert mask (one to one) at IoU >= CALIBRATION_IOU, and the ROC AUC of the scores.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_engine.audit.core import audit
from data_engine.audit.load import load_side
from data_engine.audit.report import GROUP_COLUMNS, write_report
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import Dataset, write_atomic
from data_engine.schema import setting

CALIBRATION_IOU = 0.9  # a generated mask "matches an expert" at this IoU (the verifier's label)
PAIRS_SCHEMA = pa.schema(
    [
        ("file_name", pa.string()),
        ("image_id", pa.int64()),  # the generated dataset's image_id (joins to masks/ and images/)
        ("expert_image_id", pa.int64()),  # the expert side's id of the same image
        ("pred_mask_id", pa.int64()),  # the generated mask's mask_id; null: expert mask missed
        ("expert_mask_id", pa.int64()),  # the expert mask's mask_id (COCO: annotation id); null: unmatched
        ("pred_index", pa.int64()),  # index among the image's generated masks; null: expert mask missed
        ("expert_index", pa.int64()),  # index among the image's expert masks; null: generated mask unmatched
        ("iou", pa.float64()),
        ("boundary_iou", pa.float64()),
        ("pred_area", pa.int64()),
        ("expert_area", pa.int64()),
        ("size", pa.string()),  # small / medium / large, by the expert mask's area where there is one
        ("score", pa.float64()),
        ("stage", pa.string()),
        ("source", pa.string()),
    ]
)


@dataclass(frozen=True)
class Audit:
    pred: str | None = setting("out/auto")  # generated masks: a data-engine output.dir, or a COCO instances JSON
    # expert masks: same choices (e.g. a stage-1 import, or the samples' instances.json)
    expert: str | None = setting(None)
    # pair images by file_name (relative to the image folder) or image_id
    match_by: str = setting("file_name", choices=("file_name", "image_id"))
    min_iou: float = setting(0.0, ge=0, le=0.999)  # masks pair up only above this IoU (0: any overlap)
    boundary_ratio: float = setting(0.02, ge=0.001, le=1)  # boundary IoU band width, as a fraction of the diagonal
    # ranks generated masks for AR@k (predicted_iou or stability_score; missing: 1)
    score: str = setting("predicted_iou", choices=("predicted_iou", "stability_score"))
    worst_k: int = setting(6, ge=0)  # worst images listed, and drawn in the report
    image_root: str | None = setting(
        None, exists="path"
    )  # images for the report's overlays; null: the pred run's input
    # 0: only masks no other mask of their image holds, on both sides (whole objects; the `depth` column,
    # io/hierarchy.py); null: all masks
    max_depth: int | None = setting(None, ge=0)


SETTINGS_RECORDED = ("match_by", "min_iou", "boundary_ratio", "score", "worst_k", "max_depth")


def run(cfg: dict, settings: Audit) -> dict:
    """Load both sides, audit, write the three outputs; returns the headline figures and the paths."""
    start = time.time()
    pred = load_side(settings.pred, "pred", settings.match_by, settings.score, settings.max_depth)
    expert = load_side(settings.expert, "expert", settings.match_by, settings.score, settings.max_depth)
    result = audit(pred, expert, settings.min_iou, settings.boundary_ratio, settings.worst_k)
    calibrated = verifier_calibration(pred, result["rows"])
    if calibrated:
        result["metrics"]["verifier_calibration"] = calibrated
    out_dir = Path(cfg["output"]["dir"])
    recorded = {
        "pred": pred["path"],
        "expert": expert["path"],
        **{k: getattr(settings, k) for k in SETTINGS_RECORDED},
    }
    paths = write_outputs(result, out_dir, recorded, image_root(settings.image_root, pred, expert))
    summary = {k: result["metrics"].get(k) for k in ("images", *GROUP_COLUMNS)}
    if calibrated:
        summary["verifier_roc_auc"] = calibrated["roc_auc"]
    return {**summary, **paths, "seconds": round(time.time() - start, 2)}


def verifier_calibration(pred: dict, rows: list[dict]) -> dict | None:
    """The verifier's scores of the generated masks (their verifier_score column) against their match with
    an expert mask at IoU >= CALIBRATION_IOU; None when no generated mask was scored."""
    import pyarrow.compute as pc

    from data_engine.verifier.figures import calibration, roc_auc

    if pred["kind"] != "dataset":
        return None
    scored_masks = Dataset.open(pred["path"], "audit.pred").masks(
        filter=pc.is_valid(pc.field("verifier_score")), columns=["mask_id", "verifier_score"]
    )
    scores = dict(zip(scored_masks["mask_id"].to_pylist(), scored_masks["verifier_score"].to_pylist()))
    scored = [
        (scores[r["pred_mask_id"]], (r["iou"] or 0) >= CALIBRATION_IOU) for r in rows if r["pred_mask_id"] in scores
    ]
    if not scored:
        return None
    s, good = np.array([x for x, _ in scored]), np.array([y for _, y in scored])
    return {"label_iou": CALIBRATION_IOU, "masks": len(s), "roc_auc": roc_auc(s, good), "bins": calibration(s, good)}


def image_root(given: str | None, pred: dict, expert: dict):
    """audit.image_root (`given`), else the generated run's input folder, else a COCO file's folder."""
    if given:
        return Path(given).expanduser()
    if pred["kind"] == "dataset":
        root = Dataset.open(pred["path"], "audit.pred").image_root
        if root:
            return root
    for side in (expert, pred):
        if side["kind"] == "coco":
            return Path(side["path"]).parent
    return None


def write_outputs(result: dict, out_dir: Path, settings: dict, root) -> dict:
    """metrics.json (figures and settings), pairs.parquet (one row per mask), report.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {**result["metrics"], "settings": settings, "per_image": result["per_image"]}
    write_text_atomic(json.dumps(doc, indent=2), out_dir / "metrics.json")
    write_atomic(pa.Table.from_pylist(result["rows"], schema=PAIRS_SCHEMA), out_dir / "pairs.parquet")
    write_report(result, out_dir / "report.html", root, "Mask quality audit", {**settings, "image_root": root})
    return {
        "metrics": str(out_dir / "metrics.json"),
        "pairs": str(out_dir / "pairs.parquet"),
        "report": str(out_dir / "report.html"),
    }
