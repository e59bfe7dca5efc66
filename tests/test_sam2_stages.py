"""Every stage that uses SAM runs with a SAM 2.1 model (seeded sam2.1_hiera_t weights at a small input):
the automatic stage and its audit, stage 1's click replay, stage 2's box prompts, and a short fine-tune."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from assisted_data import DATA, copy_fixture, make_images
from sam2_fixtures import SIDE, VARIANT, sam2_checkpoint, sam2_model  # noqa: F401
from semi_data import OracleDetector, make_detector_file, make_scenes, semi_cfg

from data_engine.config import validate
from data_engine.io.dataset import read_masks
from data_engine.model import build as models
from data_engine.semi import prefill
from data_engine.stages import run_stage

SAMPLES = Path(__file__).parents[1] / "data_engine" / "samples"


def sam2(checkpoint, side: int = SIDE) -> list[str]:
    return [f"model={VARIANT}", f"model.checkpoint={checkpoint}", f"model.image_size={side}"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(tmp_path_factory.mktemp("sam2_scenes") / "synth", num=2)


def test_automatic_stage_and_audit(make_cfg, sam2_checkpoint, tmp_path):  # noqa: F811
    images = tmp_path / "images"
    images.mkdir()
    for name in ("scene-00000.png", "scene-00001.png"):
        shutil.copy(SAMPLES / name, images / name)
    cfg = make_cfg(
        "stage=auto",
        *sam2(sam2_checkpoint),
        "amg=sam2",
        "amg.points_per_side=4",
        "amg.pred_iou_thresh=0",
        "amg.stability_score_thresh=0",
        f"input.path={images}",
    )
    validate(cfg)
    summary = run_stage(cfg)
    masks = read_masks(cfg["output"]["dir"]).to_pylist()
    assert summary["images_ok"] == 2 and summary["masks"] == len(masks) >= 2
    assert {m["model"] for m in masks} == {VARIANT}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["model"]["variant"] == VARIANT and run["model"]["sha256"] == models.sha256_file(sam2_checkpoint)
    audit = make_cfg("stage=audit", f"audit.pred={cfg['output']['dir']}", f"audit.expert={SAMPLES / 'instances.json'}")
    audit["output"]["dir"] = str(tmp_path / "audit")
    figures = run_stage(audit)
    assert figures["pred_masks"] == len(masks) and figures["expert_masks"] > 0


def test_click_replay(make_cfg, sam2_checkpoint, tmp_path):  # noqa: F811
    root = make_images(tmp_path / "images")
    cfg = make_cfg(
        "stage=assisted",
        f"assisted.image_root={root}",
        "input.shard_size=1",
        "assisted.format=labelme",
        f"assisted.annotations={copy_fixture('labelme', root)}",
        f"assisted.clicks={DATA / 'clicks.json'}",
        *sam2(sam2_checkpoint),
    )
    run_stage(cfg)
    replayed = [m for m in read_masks(cfg["output"]["dir"]).to_pylist() if m["source"] == "click"]
    assert len(replayed) == 4 and {m["model"] for m in replayed} == {VARIANT}
    sign = next(m for m in replayed if json.loads(m["extra"])["original_id"] == "sign-1")
    assert len(json.loads(sign["extra"])["iou_per_click"]) == 1


def test_box_prompts_of_stage_2(scenes, sam2_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    oracle = OracleDetector(scenes)
    monkeypatch.setattr(prefill, "detect", oracle)
    detector = make_detector_file(tmp_path / "detector.pt")
    cfg = semi_cfg(
        scenes / "pictures", detector, tmp_path / "semi", *sam2(sam2_checkpoint), "amg.max_mask_area_frac=null"
    )
    summary = run_stage(cfg)
    masks = read_masks(tmp_path / "semi").to_pylist()
    assert oracle.calls == 2 and summary["masks"] == len(masks) > 0
    assert {(m["stage"], m["source"], m["model"]) for m in masks} == {("semi", "prefill", VARIANT)}


def test_fine_tune_writes_a_model_that_loads(make_cfg, scenes, sam2_checkpoint, sam2_model, tmp_path):  # noqa: F811
    cfg = make_cfg(
        "stage=train",
        f"train.data=[{scenes}]",
        *sam2(sam2_checkpoint, side=128),
        "train.steps=2",
        "train.images_per_step=1",
        "train.masks_per_image=2",
        "train.warmup_steps=1",
        "train.lr=1e-4",
        f"output.dir={tmp_path / 'train'}",
    )
    validate(cfg)
    summary = run_stage(cfg)
    assert summary["steps"] == 2 and summary["images"] == 2
    log = [json.loads(line) for line in (tmp_path / "train" / "loss_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(row["loss"] > 0 for row in log)
    tuned = models.build_sam(VARIANT, checkpoint=summary["model"], device="cpu", image_size=128)
    before = sam2_model.sam_mask_decoder.iou_token.weight
    after = tuned.sam_mask_decoder.iou_token.weight.float()
    assert not torch.allclose(before.half().float(), after)  # trained, and the fp16 file fits the variant
