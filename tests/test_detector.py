"""The detector: builders download nothing, checkpoints round-trip or fail clearly, detect's shapes,
boxes from masks, the held-out split, COCOeval's figures, and stage=detector end to end with resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import _one_torch_thread, run_killed_at_step_3  # noqa: F401 (autouse fixture)

from data_engine.detector import evaluate as E
from data_engine.detector.data import batch, load_examples, split
from data_engine.detector.model import (
    VARIANTS,
    DetectorCheckpointError,
    build_detector,
    detect,
    load_detector,
    save_detector,
)
from data_engine.detector.settings import Detector
from data_engine.detector.train import initial_model
from data_engine.errors import ConfigError, UserError
from data_engine.io import rle
from data_engine.model.build import EMBEDDED_TINY
from data_engine.schema import parse
from data_engine.stages import run_stage

SMALL_DETECTOR = [
    "stage=detector",
    "detector.min_size=96",
    "detector.max_size=96",
    "detector.images_per_step=2",
    "detector.warmup_steps=1",
    "detector.checkpoint_every=1",
    "detector.val_fraction=0.3",
]


@pytest.fixture
def scenes(make_cfg, tmp_path):
    """Six small synthetic scenes written by the synth stage (Parquet, COCO and pictures)."""
    out = tmp_path / "scenes"
    run_stage(
        make_cfg("stage=synth", "synth.num_scenes=6", "synth.min_size=64", "synth.max_size=96", f"output.dir={out}")
    )
    return out


def detector_cfg(make_cfg, scenes, out, *overrides):
    return make_cfg(*SMALL_DETECTOR, f"detector.data=[{scenes}]", f"output.dir={out}", *overrides)


# ----------------------------------------------------------------------------------------------
# The model API
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_builders_download_nothing_and_detect_one_class_many_times(variant, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a builder tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = build_detector(variant)
    assert model.roi_heads.box_predictor.cls_score.out_features == 2  # background + "object"
    assert model.roi_heads.detections_per_img > 100


def test_unknown_variant_is_a_user_error():
    with pytest.raises(UserError, match="unknown detector variant 'huge'"):
        build_detector("huge")


def test_detect_returns_xyxy_boxes_and_scores_best_first():
    torch.manual_seed(0)
    model = build_detector("small", min_size=96, max_size=96).eval()
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    boxes, scores = detect(model, image, score_thresh=0.0)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.shape == (len(scores), 4) and len(scores) > 0
    assert np.all(np.diff(scores) <= 0)
    # Boxes lie in the image's own pixels (the model works at 96 px), corners ordered
    assert boxes[:, [0, 2]].max() <= 90 and boxes[:, [1, 3]].max() <= 60
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
    # A higher threshold keeps a prefix; the model's own floor is left as it was
    cut = float(np.median(scores))
    kept_boxes, kept = detect(model, image, score_thresh=cut)
    assert np.all(kept >= cut) and np.array_equal(kept, scores[: len(kept)])
    assert model.roi_heads.score_thresh == 0.05 and not model.training


def test_save_and_load_round_trip_with_settings(tmp_path):
    torch.manual_seed(0)
    model = build_detector("small", min_size=96, max_size=128, box_detections_per_img=150)
    save_detector(model, "small", {"min_size": 96, "max_size": 128, "box_detections_per_img": 150}, tmp_path / "d.pt")
    loaded = load_detector(tmp_path / "d.pt")
    assert not loaded.training and loaded.roi_heads.detections_per_img == 150
    assert loaded.transform.max_size == 128
    image = np.random.default_rng(1).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    for a, b in zip(detect(model.eval(), image, 0.0), detect(loaded, image, 0.0)):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]  # no temporary file left


def foreign_files(tmp_path: Path) -> dict:
    """Files that are not detector checkpoints of this project."""
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02 not a torch file")
    torch.save({"weights": torch.zeros(3), "epoch": 1}, tmp_path / "random.pt")
    torch.save(torch.zeros(4), tmp_path / "tensor.pt")
    torch.save(build_detector("small").state_dict(), tmp_path / "plain_state.pt")
    return {
        "missing": (tmp_path / "absent.pt", "does not exist"),
        "corrupt": (tmp_path / "corrupt.pt", "could not be read"),
        "random": (tmp_path / "random.pt", "not a detector checkpoint"),
        "tensor": (tmp_path / "tensor.pt", "holds a Tensor"),
        "sam": (EMBEDDED_TINY, "a SAM checkpoint"),
        "plain_state": (tmp_path / "plain_state.pt", "plain torchvision detector state dict"),
    }


@pytest.mark.parametrize("kind", ["missing", "corrupt", "random", "tensor", "sam", "plain_state"])
def test_load_detector_rejects_files_that_are_not_its_checkpoints(tmp_path, kind):
    path, why = foreign_files(tmp_path)[kind]
    with pytest.raises(DetectorCheckpointError, match=why) as err:
        load_detector(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "stage=detector" in message


def test_load_detector_rejects_weights_of_another_architecture(tmp_path):
    model = build_detector("small")
    state = model.state_dict()
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(91, 256)  # a 91-class head
    torch.save({"format": "data_engine.detector/1", "variant": "small", "settings": {}, "model": state}, tmp_path / "x")
    with pytest.raises(DetectorCheckpointError, match="does not fit the architecture"):
        load_detector(tmp_path / "x")


# ----------------------------------------------------------------------------------------------
# Data, split and figures
# ----------------------------------------------------------------------------------------------


def test_boxes_are_the_masks_bounding_boxes_and_flip_with_the_image(scenes):
    examples, skipped = load_examples([str(scenes)], None, 96)
    assert len(examples) == 6 and skipped == []
    ex = examples[0]
    mask = rle.decode(ex["masks"][0], 96, 96)
    ys, xs = np.nonzero(mask)
    np.testing.assert_array_equal(ex["boxes"][0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    # A batch of one example, flipped: the same boxes mirrored in x
    flipped = None
    for seed in range(20):
        images, targets = batch([ex], np.random.default_rng(seed), 1, True, "cpu")
        if not torch.equal(images[0], ex["image"].float() / 255):
            flipped = images[0], targets[0]["boxes"]
            break
    assert flipped is not None
    width = ex["image"].shape[-1]
    torch.testing.assert_close(flipped[0], ex["image"].flip(-1).float() / 255)
    torch.testing.assert_close(flipped[1][:, 0], width - torch.from_numpy(ex["boxes"][:, 2]))
    assert targets[0]["labels"].tolist() == [1] * len(ex["boxes"])


def test_held_out_images_depend_on_their_id_alone(scenes):
    examples, _ = load_examples([str(scenes)], None, 96)
    names = lambda chosen: {e["file_name"] for e in chosen}  # noqa: E731
    kept, held = split(examples, 0.5)
    assert 0 < len(held) < len(examples)
    # Reordering the images, or leaving some out, moves no image across
    assert names(split(examples[::-1], 0.5)[1]) == names(held)
    assert split([held[0], kept[0]], 0.5) == ([kept[0]], [held[0]])
    # At least one image is held out when the fraction is small but not zero; none when it is zero
    assert len(split(examples, 1e-6)[1]) == 1 and split(examples, 0.0)[1] == []
    with pytest.raises(UserError, match="holds out all"):
        split(examples, 1.0)


def test_cocoeval_figures_are_one_for_perfect_boxes_and_drop_for_shifted_ones(scenes, monkeypatch):
    examples, _ = load_examples([str(scenes)], None, 96)
    truth = {ex["image"].permute(1, 2, 0).numpy().tobytes(): ex["boxes"] for ex in examples}

    def true_boxes_moved_by(shift, image, score_thresh):
        """A stand-in detector: `model` is how far every true box is moved right and down."""
        boxes = truth[image.tobytes()]
        return boxes + np.float32(shift), np.linspace(1, 0.5, len(boxes), dtype=np.float32)

    monkeypatch.setattr(E, "detect", true_boxes_moved_by)
    exact = E.box_metrics(0, examples)
    assert exact["ap"] == exact["ap50"] == exact["ar100"] == 1.0 and exact["boxes"] == exact["detections"]
    shifted = E.box_metrics(6, examples)
    assert shifted["ap"] < 0.9 and shifted["ar100"] < 0.9
    assert E.box_metrics(0, [])["ap"] is None


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def test_stage_trains_and_writes_model_and_metrics(make_cfg, scenes, tmp_path):
    out = tmp_path / "det"
    summary = run_stage(detector_cfg(make_cfg, scenes, out, "detector.steps=2"))
    assert summary["steps"] == 2 and summary["train_images"] + summary["held_out_images"] == 6
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("ap", "ap50", "ar100", "ar300"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["images"] == summary["held_out_images"] > 0
    model = load_detector(out / "model.pt")
    assert model.transform.max_size == 96 and model.roi_heads.detections_per_img == 300
    rows = [json.loads(ln) for ln in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    assert (out / "skipped.jsonl").read_text() == ""


def test_a_killed_run_resumes_at_its_checkpoint_with_the_same_values(make_cfg, scenes, tmp_path, monkeypatch):
    straight = run_stage(detector_cfg(make_cfg, scenes, tmp_path / "straight", "detector.steps=3"))
    assert straight["steps"] == 3
    cfg = detector_cfg(make_cfg, scenes, tmp_path / "resumed", "detector.steps=3")
    assert run_killed_at_step_3(cfg, monkeypatch)["step"] == 2
    # The rerun continues at step 3: one log row per step, the same values and weights as the straight run
    assert run_stage(cfg)["steps"] == 3

    def logged(name):
        rows = [json.loads(ln) for ln in (tmp_path / name / "loss_log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert [r["step"] for r in logged("resumed")] == [1, 2, 3]
    assert logged("resumed") == logged("straight")
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text()) == straight["metrics"]


def test_training_starts_from_detector_checkpoint(make_cfg, scenes, tmp_path):
    first = tmp_path / "first"
    run_stage(detector_cfg(make_cfg, scenes, first, "detector.steps=1"))
    # detector.checkpoint: the first run's weights are the start of the second, whatever its seed
    cfg = detector_cfg(make_cfg, scenes, tmp_path / "second", f"detector.checkpoint={first}/model.pt")
    detector = parse(Detector, cfg["detector"], "detector")
    start = initial_model(detector, seed=123, device="cpu")
    saved = load_detector(first / "model.pt")
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in start.state_dict().items())
    # A plain torchvision state dict of the variant is accepted too; another variant's is refused
    torch.save(saved.state_dict(), tmp_path / "plain.pt")
    plain = initial_model(replace(detector, checkpoint=str(tmp_path / "plain.pt")), seed=1, device="cpu")
    assert torch.equal(plain.state_dict()["rpn.head.conv.0.0.weight"], saved.state_dict()["rpn.head.conv.0.0.weight"])
    with pytest.raises(DetectorCheckpointError, match="'small' detector, not 'resnet50_fpn_v2'"):
        initial_model(replace(detector, variant="resnet50_fpn_v2"), seed=1, device="cpu")
    with pytest.raises(DetectorCheckpointError, match="SAM checkpoint"):
        initial_model(replace(detector, checkpoint=str(EMBEDDED_TINY)), seed=1, device="cpu")


@pytest.mark.parametrize(
    "override, key",
    [
        ("detector.variant=huge", "detector.variant"),
        ("detector.steps=0", "detector.steps"),
        ("detector.val_fraction=1.5", "detector.val_fraction"),
        ("detector.optimizer=rmsprop", "detector.optimizer"),
        ("detector.min_size=200", "detector.min_size"),
        ("detector.checkpoint=/nonexistent.pt", "detector.checkpoint"),
        ("detector.device=tpu", "detector.device"),
        ("detector.hflip=3", "detector.hflip"),
        ("detector.data=[/nonexistent]", "detector.data"),
    ],
)
def test_bad_settings_fail_before_work_naming_the_key(make_cfg, scenes, tmp_path, override, key):
    cfg = detector_cfg(make_cfg, scenes, tmp_path / "bad", override)
    with pytest.raises(ConfigError, match=f"^{key}:"):
        run_stage(cfg)
    assert not (tmp_path / "bad").exists()


def test_no_data_is_a_config_error(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="detector.data"):
        run_stage(make_cfg(*SMALL_DETECTOR, f"output.dir={tmp_path / 'x'}"))


def test_images_without_masks_or_files_are_listed_with_their_reason(scenes):
    doc = json.loads((scenes / "instances.json").read_text())
    doc["images"] += [
        {"id": 10**6, "file_name": "no-masks.png", "height": 64, "width": 64},
        {"id": 10**6 + 1, "file_name": "absent.png", "height": 64, "width": 64},
    ]
    square = {"segmentation": [[2, 2, 30, 2, 30, 30, 2, 30]], "bbox": [2, 2, 28, 28], "area": 784, "iscrowd": 0}
    doc["annotations"].append({**doc["annotations"][0], **square, "id": 10**6, "image_id": 10**6 + 1})
    (scenes / "more.json").write_text(json.dumps(doc))
    examples, skipped = load_examples([str(scenes / "more.json")], None, 96)
    reasons = {row["file_name"]: row["reason"] for row in skipped}
    assert len(examples) == 6 and sorted(reasons) == ["absent.png", "no-masks.png"]
    assert "no mask" in reasons["no-masks.png"]
    # The shared reader's advice names this stage's keys
    assert "is missing; pass detector.image_root" in reasons["absent.png"]


def test_a_dataset_without_its_images_is_refused_naming_the_detector_keys(tmp_path):
    from maskdata import rect, write_dataset

    from data_engine.io.dataset import RunRecordError
    from data_engine.train.data import TrainDataError

    folder = write_dataset(tmp_path / "data", {"a.png": [rect(64, 80, 0, 0, 30, 30)]})  # no run.json, no pictures/
    with pytest.raises(TrainDataError, match=r"^detector\.data: cannot tell .* pass detector\.image_root="):
        load_examples([str(folder)], None, 96)
    (folder / "run.json").write_text("{not json")
    with pytest.raises(RunRecordError, match=r"^detector\.data: .*run\.json is not a usable run record"):
        load_examples([str(folder)], None, 96)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stage_trains_on_the_gpu_and_the_model_detects_there(make_cfg, scenes, tmp_path):
    out = tmp_path / "gpu"
    summary = run_stage(detector_cfg(make_cfg, scenes, out, "detector.steps=2", "detector.device=cuda"))
    assert summary["steps"] == 2 and 0.0 <= summary["metrics"]["ar100"] <= 1.0
    model = load_detector(out / "model.pt", device="cuda")
    boxes, scores = detect(model, np.zeros((64, 80, 3), dtype=np.uint8), 0.0)
    assert boxes.shape == (len(scores), 4) and boxes.dtype == np.float32
