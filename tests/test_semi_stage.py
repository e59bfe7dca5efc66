"""stage=semi, the prefill: box prompts through the automatic filters, provenance, failed rows, resume,
empty detections, detector checkpoints of the wrong kind, and settings."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from semi_data import OracleDetector, make_detector_file, make_scenes, semi_cfg

from data_engine.amg.generator import MaskGenerator
from data_engine.config import compose, validate
from data_engine.detector.model import DetectorCheckpointError
from data_engine.errors import ConfigError, UserError
from data_engine.io import rle
from data_engine.io.atomic import sha256_file
from data_engine.io.dataset import read_images, read_masks
from data_engine.model.build import EMBEDDED_TINY, build_sam
from data_engine.runtime.runs import OutputConflict
from data_engine.semi import prefill
from data_engine.stages import run_stage


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_scenes(tmp_path_factory.mktemp("semi_scenes") / "synth")


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory):
    return make_detector_file(tmp_path_factory.mktemp("semi_det") / "model.pt")


@pytest.fixture
def oracle(scenes, monkeypatch):
    stand_in = OracleDetector(scenes)
    monkeypatch.setattr(prefill, "detect", stand_in)
    return stand_in


@pytest.fixture(scope="module")
def sam():
    return build_sam("tiny", device="cpu")


def test_generate_from_boxes_keeps_box_provenance_and_applies_the_filters(sam, scenes):
    oracle = OracleDetector(scenes)
    image = prefill_image(scenes, "scene-00000.png")
    boxes, _ = oracle(None, image)
    opened = MaskGenerator(sam, **compose(["amg=tiny", "amg.pred_iou_thresh=0", "amg.stability_score_thresh=0"])["amg"])
    got = opened.generate_from_boxes(image, boxes)
    assert 0 < len(got["segmentation"]) <= len(boxes)
    for i, b in enumerate(got["box_index"]):
        assert got["point_coords"][i] == [boxes[b][:2].tolist(), boxes[b][2:].tolist()]  # the box's corners
        assert got["crop_box"][i] == [0, 0, image.shape[1], image.shape[0]]
        assert got["area"][i] == rle.area([got["segmentation"][i]], *image.shape[:2])[0]
    # The automatic stage's thresholds decide what is kept, from the same scores
    strict = MaskGenerator(sam, **compose(["amg=tiny", "amg.pred_iou_thresh=0.75"])["amg"])
    kept = strict.generate_from_boxes(image, boxes)
    assert len(kept["segmentation"]) < len(got["segmentation"])
    assert all(p >= 0.75 for p in kept["predicted_iou"]) and all(s >= 0.95 for s in kept["stability_score"])
    # No boxes: no masks, and the same columns
    empty = strict.generate_from_boxes(image, np.zeros((0, 4)))
    assert set(empty) == set(got) and not any(empty.values())


def prefill_image(scenes: Path, name: str) -> np.ndarray:
    from data_engine.io.images import load_rgb

    return load_rgb(scenes / "pictures" / name, 10**8)


def test_prefill_writes_semi_rows_with_detector_provenance(scenes, detector_file, oracle, tmp_path):
    cfg = semi_cfg(scenes / "pictures", detector_file, tmp_path / "semi")
    validate(cfg)
    summary = run_stage(cfg)
    masks, images = read_masks(tmp_path / "semi").to_pylist(), read_images(tmp_path / "semi").to_pylist()
    assert summary["images_ok"] == len(images) == 3 and oracle.calls == 3
    assert summary["masks"] == len(masks) > 0 and summary["masks_by_source"] == {"prefill": len(masks)}
    answers = {}
    for row in images:
        answers[row["file_name"]] = oracle(None, prefill_image(scenes, row["file_name"]))
    for row in masks:
        assert (row["stage"], row["source"], row["model"]) == ("semi", "prefill", "tiny")
        extra = json.loads(row["extra"])
        boxes, scores = answers[row["file_name"]]
        k = [i for i, b in enumerate(boxes.tolist()) if b == extra["detector_box"]]
        assert k and extra["detector_score"] == pytest.approx(float(scores[k[0]]))
        assert row["point_coords"] == [extra["detector_box"][:2], extra["detector_box"][2:]]
    run = json.loads((tmp_path / "semi" / "run.json").read_text())
    assert run["detector"]["sha256"] == sha256_file(detector_file)
    assert run["config"]["semi"]["box_score_thresh"] == 0.5


def test_box_score_threshold_and_max_boxes_limit_the_prompts(scenes, detector_file, oracle, tmp_path):
    cfg = semi_cfg(
        scenes / "pictures", detector_file, tmp_path / "semi", "semi.box_score_thresh=0.9", "semi.max_boxes=1"
    )
    run_stage(cfg)
    masks = read_masks(tmp_path / "semi").to_pylist()
    # Scores 0.99, 0.94, 0.89, ...: two boxes pass 0.9, one is prompted per image
    assert 0 < len(masks) <= 3
    assert all(json.loads(r["extra"])["detector_score"] == pytest.approx(0.99) for r in masks)


def test_bad_image_gets_a_failed_row_and_resume_skips_done_shards(scenes, detector_file, oracle, tmp_path):
    pictures = tmp_path / "pictures"
    shutil.copytree(scenes / "pictures", pictures)
    (pictures / "broken.png").write_bytes(b"not a png at all")
    cfg = semi_cfg(pictures, detector_file, tmp_path / "semi", "input.shard_size=2")
    summary = run_stage(cfg)
    rows = {r["file_name"]: r for r in read_images(tmp_path / "semi").to_pylist()}
    assert rows["broken.png"]["status"] == "failed" and rows["broken.png"]["error"]
    assert summary["images"] == 4 and summary["images_failed"] == 1
    # A rerun finds every shard done: nothing is prompted again, nothing rewritten
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "semi").glob("masks/*.parquet")}
    calls = oracle.calls
    run_stage(cfg)
    assert oracle.calls == calls
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "semi").glob("masks/*.parquet")}
    # An interrupted run resumes the missing shard only
    (tmp_path / "semi" / "_done" / "000000" / "shard-000000001.json").unlink()
    run_stage(cfg)
    assert oracle.calls == calls + 2 and len(read_images(tmp_path / "semi")) == 4


def test_resume_refuses_another_detector(scenes, detector_file, oracle, tmp_path):
    detector = tmp_path / "model.pt"
    shutil.copy(detector_file, detector)
    run_stage(semi_cfg(scenes / "pictures", detector, tmp_path / "semi"))
    # Retrained in place: same path and config, other weights -> the run record's checksum differs
    make_retrained(detector_file, detector)
    with pytest.raises(OutputConflict):
        run_stage(semi_cfg(scenes / "pictures", detector, tmp_path / "semi"))


def make_retrained(source: Path, target: Path) -> None:
    """The same detector with one weight changed: another checkpoint of the same kind."""
    import torch

    saved = torch.load(source, weights_only=True)
    key = next(k for k, v in saved["model"].items() if v.is_floating_point())
    saved["model"][key] = saved["model"][key] + 1
    torch.save(saved, target)


def test_empty_detection_on_every_image_gives_ok_images_without_masks(scenes, detector_file, monkeypatch, tmp_path):
    monkeypatch.setattr(prefill, "detect", lambda model, image, thresh: (np.zeros((0, 4), np.float32), np.zeros(0)))
    summary = run_stage(semi_cfg(scenes / "pictures", detector_file, tmp_path / "semi"))
    assert summary["images_ok"] == 3 and summary["masks"] == 0 and summary["images_without_masks"] == 3
    # Every image is still exported, for the annotators to draw on
    tasks = json.loads((tmp_path / "semi" / "preannotations" / "labelstudio_tasks.json").read_text())
    assert len(tasks) == 3 and all(t["predictions"][0]["result"] == [] for t in tasks)
    # Label Studio's local files, its document root at the input folder's parent (the default semi.image_url)
    assert [t["data"]["image"] for t in tasks] == [
        f"/data/local-files/?d=pictures/{t['meta']['file_name']}" for t in tasks
    ]


def test_untrained_detector_runs_end_to_end(scenes, detector_file, tmp_path):
    """The real detector path (no stand-in): a seeded untrained detector, few boxes."""
    cfg = semi_cfg(scenes / "pictures", detector_file, tmp_path / "semi", "semi.box_score_thresh=0", "semi.max_boxes=3")
    summary = run_stage(cfg)
    assert summary["images_ok"] == 3
    for row in read_masks(tmp_path / "semi").to_pylist():
        assert len(json.loads(row["extra"])["detector_box"]) == 4


def test_points_fill_adds_grid_masks_outside_the_prefilled_ones(scenes, detector_file, monkeypatch, tmp_path):
    monkeypatch.setattr(prefill, "detect", OracleDetector(scenes, boxes_per_image=1))
    cfg = semi_cfg(
        scenes / "pictures",
        detector_file,
        tmp_path / "semi",
        "semi.points_fill=true",
        "amg.points_per_side=6",
        "amg.crop_n_layers=0",
    )
    summary = run_stage(cfg)
    assert summary["masks_by_source"]["points_fill"] > 0 and summary["masks_by_source"]["prefill"] <= 3
    masks = read_masks(tmp_path / "semi").to_pylist()
    for name in {r["file_name"] for r in masks}:
        rows = [r for r in masks if r["file_name"] == name]
        h, w = rows[0]["height"], rows[0]["width"]
        pre = [r["segmentation"] for r in rows if r["source"] == "prefill"]
        fill = [r["segmentation"] for r in rows if r["source"] == "points_fill"]
        assert (prefill.covered_fraction(fill, pre, h, w) < 0.5).all()


@pytest.mark.parametrize("kind", ["sam", "corrupt", "missing"])
def test_a_detector_checkpoint_of_the_wrong_kind_is_a_one_line_error(scenes, tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "sam":
        shutil.copy(EMBEDDED_TINY, path)
    elif kind == "corrupt":
        path.write_bytes(b"\x80\x02 truncated pickle")
    cfg = semi_cfg(scenes / "pictures", path, tmp_path / "semi") if kind != "missing" else None
    if kind == "missing":
        cfg = semi_cfg(scenes / "pictures", tmp_path / "model.pt", tmp_path / "semi")
        cfg["detector"]["checkpoint"] = None
        with pytest.raises(ConfigError, match="detector.checkpoint"):
            run_stage(cfg)
        return
    with pytest.raises(DetectorCheckpointError) as err:
        run_stage(cfg)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert not (tmp_path / "semi" / "masks").exists()


@pytest.mark.parametrize(
    "override, key",
    [
        ("semi.box_score_thresh=1.5", "semi.box_score_thresh"),
        ("semi.max_boxes=0", "semi.max_boxes"),
        ("semi.points_fill=maybe", "semi.points_fill"),
        ("semi.export=[pdf]", "semi.export"),
    ],
)
def test_bad_settings_name_the_key(scenes, detector_file, tmp_path, override, key):
    cfg = semi_cfg(scenes / "pictures", detector_file, tmp_path / "semi", override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_min_box_iou_keeps_only_masks_that_fill_their_box(scenes, detector_file, oracle, tmp_path):
    run_stage(semi_cfg(scenes / "pictures", detector_file, tmp_path / "all"))
    run_stage(semi_cfg(scenes / "pictures", detector_file, tmp_path / "fit", "semi.min_box_iou=0.9"))
    every, fitting = read_masks(tmp_path / "all").to_pylist(), read_masks(tmp_path / "fit").to_pylist()
    fits = [prefill.box_iou_xywh([r["bbox"]], np.array([json.loads(r["extra"])["detector_box"]]))[0] for r in every]
    assert 0 < len(fitting) == sum(f >= 0.9 for f in fits) < len(every)
    assert {r["segmentation"] for r in fitting} == {r["segmentation"] for r, f in zip(every, fits) if f >= 0.9}
