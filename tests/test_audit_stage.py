"""The audit stage from the real config: outputs, a self-contained report, and errors a user can act on."""

import json
import re

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from maskdata import rect, write_coco, write_dataset

from data_engine.config import validate
from data_engine.errors import UserError
from data_engine.io.dataset import read_masks
from data_engine.stages import run_stage

H, W = 64, 80
KEYS = [
    "frac_iou_above_0.90",
    "frac_iou_above_0.75",
    "mean_iou",
    "mean_boundary_iou",
    "recall@0.5",
    "recall@0.75",
    "ar@100",
    "ar@1000",
    "by_size",
    "by_stage",
    "by_source",
    "worst_images",
]


@pytest.fixture
def sides(tmp_path):
    """A generated dataset (one shifted, one missed, one extra mask) and the expert COCO file, with images."""
    expert = {"a.png": [rect(H, W, 0, 0, 20, 20), rect(H, W, 30, 30, 60, 70)], "b.png": [rect(H, W, 5, 5, 40, 40)]}
    pred = {"a.png": [rect(H, W, 0, 2, 20, 22), rect(H, W, 30, 30, 60, 70), rect(H, W, 50, 0, 60, 10)], "b.png": []}
    images = tmp_path / "images"
    images.mkdir()
    for name in expert:
        cv2.imwrite(str(images / name), np.full((H, W, 3), 200, np.uint8))
    return write_dataset(tmp_path / "pred", pred, (H, W)), write_coco(tmp_path / "expert.json", expert, (H, W)), images


def test_audit_writes_metrics_pairs_and_a_self_contained_report(sides, make_cfg, tmp_path):
    pred, expert, images = sides
    cfg = make_cfg("stage=audit", f"audit.pred={pred}", f"audit.expert={expert}", f"audit.image_root={images}")
    validate(cfg)
    summary = run_stage(cfg)
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(k in metrics for k in KEYS)
    assert (metrics["expert_masks"], metrics["pred_masks"], metrics["matched_pairs"]) == (3, 3, 2)
    assert metrics["mean_iou"] == pytest.approx((18 / 22 + 1) / 2) == summary["mean_iou"]
    assert metrics["worst_images"][0]["file_name"] == "b.png"
    assert pq.read_table(out / "pairs.parquet").num_rows == 4  # 3 expert masks + 1 unmatched generated
    html = (out / "report.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert html.count("<img") == 3 + 2  # three plots, two worst-image overlays


def test_pairs_join_back_to_the_generated_masks_by_mask_id(sides, make_cfg, tmp_path):
    pred, expert, _ = sides
    run_stage(make_cfg("stage=audit", f"audit.pred={pred}", f"audit.expert={expert}"))
    pairs = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    masks = {m["mask_id"]: m for m in read_masks(pred).to_pylist()}
    generated = [p for p in pairs if p["pred_index"] is not None]
    assert len(generated) == len(masks) == 3  # every generated mask appears once, matched or not
    for pair in generated:  # one join on mask_id finds the mask, on the dataset's own image_id
        mask = masks[pair["pred_mask_id"]]
        assert (mask["image_id"], mask["file_name"], mask["area"]) == (
            pair["image_id"],
            pair["file_name"],
            pair["pred_area"],
        )
    expert_ids = {a["id"] for a in json.loads(expert.read_text())["annotations"]}
    assert {p["expert_mask_id"] for p in pairs if p["expert_index"] is not None} == expert_ids


def test_dataset_against_dataset_matched_by_image_id(sides, make_cfg, tmp_path):
    pred, _, _ = sides
    cfg = make_cfg(
        "stage=audit", f"audit.pred={pred}", f"audit.expert={pred}", "audit.match_by=image_id", "audit.worst_k=0"
    )
    summary = run_stage(cfg)
    assert summary["mean_iou"] == 1.0 and summary["recall@0.5"] == 1.0


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "neither a dataset folder"),
        ("unset", "audit.expert is not set"),
        ("sizes", "must be drawn on the same image size"),
        ("no_common", "audit.match_by=image_id"),
        ("bad_setting", "audit.match_by"),
    ],
)
def test_bad_input_says_what_to_do(case, message, sides, make_cfg, tmp_path):
    pred, expert, _ = sides
    args = {
        "missing": [f"audit.expert={tmp_path / 'nope.json'}"],
        "unset": [],
        "sizes": [f"audit.expert={write_coco(tmp_path / 'big.json', {'a.png': [rect(32, 32, 0, 0, 5, 5)]}, (32, 32))}"],
        "no_common": [f"audit.expert={write_coco(tmp_path / 'other.json', {'z.png': [rect(H, W, 0, 0, 5, 5)]})}"],
        "bad_setting": [f"audit.expert={expert}", "audit.match_by=path"],
    }[case]
    with pytest.raises(UserError, match=re.escape(message)):
        run_stage(make_cfg("stage=audit", f"audit.pred={pred}", *args))
