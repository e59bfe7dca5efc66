"""The audit stage: generated masks against expert masks -> metrics.json, pairs.parquet, report.html.

When the generated masks carry a verifier_score (verifier.checkpoint on stage=auto or stage=semi),
metrics.json and the report add the verifier's calibration: per score bin, the share of masks that
match an expert mask (one to one) at IoU >= CALIBRATION_IOU, and the ROC AUC of the scores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_engine.audit.core import audit
from data_engine.audit.load import load_side
from data_engine.audit.report import GROUP_COLUMNS, write_report
from data_engine.errors import check_choice, check_int, check_number, check_path
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import read_masks, read_run_record, write_atomic

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


def run(cfg: dict) -> dict:
    """Load both sides, audit, write the three outputs; returns the headline figures and the paths."""
    start = time.time()
    a = cfg["audit"]
    check(a)
    pred = load_side(a["pred"], "pred", a["match_by"], a["score"])
    expert = load_side(a["expert"], "expert", a["match_by"], a["score"])
    result = audit(pred, expert, a["min_iou"], a["boundary_ratio"], a["worst_k"])
    calibrated = verifier_calibration(pred, result["rows"])
    if calibrated:
        result["metrics"]["verifier_calibration"] = calibrated
    out_dir = Path(cfg["output"]["dir"])
    settings = {
        "pred": pred["path"],
        "expert": expert["path"],
        **{k: a[k] for k in ("match_by", "min_iou", "boundary_ratio", "score", "worst_k")},
    }
    paths = write_outputs(result, out_dir, settings, image_root(a, pred, expert))
    summary = {k: result["metrics"].get(k) for k in ("images", *GROUP_COLUMNS)}
    if calibrated:
        summary["verifier_roc_auc"] = calibrated["roc_auc"]
    return {**summary, **paths, "seconds": round(time.time() - start, 2)}


def verifier_calibration(pred: dict, rows: list[dict]) -> dict | None:
    """The verifier's scores of the generated masks against their match with an expert mask (None when
    no mask was scored)."""
    from data_engine.verifier.figures import calibration, roc_auc

    if pred["kind"] != "dataset":
        return None
    table = read_masks(pred["path"], ["mask_id", "verifier_score"]).to_pylist()
    scores = {r["mask_id"]: r["verifier_score"] for r in table if r["verifier_score"] is not None}
    scored = [
        (scores[r["pred_mask_id"]], (r["iou"] or 0) >= CALIBRATION_IOU) for r in rows if r["pred_mask_id"] in scores
    ]
    if not scored:
        return None
    s, good = np.array([x for x, _ in scored]), np.array([y for _, y in scored])
    return {"label_iou": CALIBRATION_IOU, "masks": len(s), "roc_auc": roc_auc(s, good), "bins": calibration(s, good)}


def check(a: dict) -> None:
    """Settings that cannot work fail before any file is read."""
    check_choice(a, "audit.match_by", ("file_name", "image_id"))
    check_choice(a, "audit.score", ("predicted_iou", "stability_score"))
    check_number(a, "audit.min_iou", 0, 0.999)
    check_number(a, "audit.boundary_ratio", 0.001, 1)
    check_int(a, "audit.worst_k", 0)
    check_path(a, "audit.image_root", nullable=True)


def image_root(a: dict, pred: dict, expert: dict):
    """audit.image_root, else the generated run's input folder, else a COCO file's folder."""
    if a["image_root"]:
        return Path(a["image_root"]).expanduser()
    if pred["kind"] == "dataset":
        root = read_run_record(pred["path"], "audit.pred", missing_ok=True).get("input_root")
        if root:
            return Path(root)
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
