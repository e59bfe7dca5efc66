"""Click replay mechanics on the embedded model (any weights): what is predicted, recorded and stored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from assisted_data import DATA, make_images, outcome, statuses
from pycocotools import mask as mask_utils

from data_engine.importers import clicks
from data_engine.importers.clicks import click_row
from data_engine.io import rle
from data_engine.io.images import load_rgb
from data_engine.model.build import build_sam
from data_engine.model.click_replay import ClickReplayer

H, W = 48, 64


@pytest.fixture(scope="module")
def sam():
    return build_sam("tiny", device="cpu")


@pytest.fixture
def image(tmp_path):
    root = make_images(tmp_path, {"street.jpg": (W, H)})
    return load_rgb(root / "street.jpg", 10**8)


def counting_encoder(sam):
    calls = []
    handle = sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def obj(clicks_, final=None, **extra):
    return {
        "file_name": "street.jpg",
        "height": H,
        "width": W,
        "id": "o",
        "clicks": clicks_,
        "final_counts": final,
        "extra": extra,
    }


def test_one_embedding_per_image(sam, image):
    calls, handle = counting_encoder(sam)
    try:
        replayer = ClickReplayer(sam)
        replayer.replay_image(image, [obj([[10, 10, 1]]), obj([[30, 20, 1], [5, 5, 0]]), obj([[50, 40, 1]])])
        replayer.replay_image(image, [obj([[20, 30, 1]]), obj([[40, 10, 1], [41, 11, 1]])])
    finally:
        handle.remove()
    assert len(calls) == 2


def test_each_click_uses_all_clicks_so_far_and_the_previous_logits(sam, image):
    replayer = ClickReplayer(sam)
    seen, predict = [], replayer.predictor.predict

    def spy(**kwargs):
        out = predict(**kwargs)
        seen.append((kwargs, out))
        return out

    replayer.predictor.predict = spy
    replayer.replay_image(image, [obj([[20, 25, 1], [31, 22, 1], [14, 40, 0]])])
    assert [len(k["point_coords"]) for k, _ in seen] == [1, 2, 3]
    assert seen[2][0]["point_labels"].tolist() == [1, 1, 0]
    assert seen[0][0]["mask_input"] is None and seen[0][0]["multimask_output"] is True
    first_scores, first_low = seen[0][1][1], seen[0][1][2]
    assert np.array_equal(seen[1][0]["mask_input"], first_low[[int(np.argmax(first_scores))]])  # best of three
    assert seen[1][0]["multimask_output"] is False and seen[2][0]["multimask_output"] is False
    assert np.array_equal(seen[2][0]["mask_input"], seen[1][1][2][[0]])


def test_iou_per_click_is_measured_against_the_final_mask(sam, image):
    replayer = ClickReplayer(sam)
    clicks_ = [[20, 25, 1], [31, 22, 1], [14, 40, 0]]
    everything = rle.encode(np.ones((1, H, W), bool))[0]
    # the model's mask after k clicks depends only on the first k clicks
    *prefixes, result = replayer.replay_image(
        image, [obj(clicks_[:1]), obj(clicks_[:2]), obj(clicks_), obj(clicks_, final=everything)]
    )
    assert len(result["iou_per_click"]) == len(result["predicted_iou_per_click"]) == 3
    expected = [rle.area([p["model_counts"]], H, W)[0] / (H * W) for p in prefixes]
    assert result["iou_per_click"] == pytest.approx(expected)
    own, none = replayer.replay_image(image, [obj(clicks_, final=prefixes[-1]["model_counts"]), obj(clicks_)])
    assert own["iou_per_click"][-1] == 1.0
    assert none["iou_per_click"] is None


def test_stored_mask_is_the_annotators_when_given_else_the_models(sam, image):
    replayer = ClickReplayer(sam)
    final = mask_utils.merge(mask_utils.frPyObjects([[10, 20, 30, 18, 34, 30, 12, 32]], H, W))["counts"].decode()
    with_final = obj([[20, 25, 1], [14, 40, 0]], final=final, annotator="maria", seconds=14.2)
    without = obj([[50, 35, 1]], annotator="maria")
    results = replayer.replay_image(image, [with_final, without])
    row = click_row(with_final, results[0], "tiny")
    assert row["segmentation"] == final and row["source"] == "click" and row["stage"] == "assisted"
    assert row["model"] == "tiny" and row["predicted_iou"] is None
    assert row["point_coords"] == [[20, 25], [14, 40]]
    extra = json.loads(row["extra"])
    assert extra["num_clicks"] == 2 and extra["click_labels"] == [1, 0] and len(extra["iou_per_click"]) == 2
    assert extra["final_mask"] == "annotator" and extra["annotator"] == "maria" and extra["seconds"] == 14.2
    row = click_row(without, results[1], "tiny")
    assert row["segmentation"] == results[1]["model_counts"] and json.loads(row["extra"])["final_mask"] == "model"
    assert row["predicted_iou"] == results[1]["predicted_iou_per_click"][-1]
    assert json.loads(row["extra"])["iou_per_click"] is None


def test_click_file_validation_reports_every_object(tmp_path):
    root = make_images(tmp_path)
    objects, report = clicks.read(DATA / "clicks.json", root)
    assert outcome(report) == [
        ("car-1", "imported"),
        ("sign-1", "imported"),
        ("tree-1", "imported"),
        ("car-1", "duplicate id"),
        ("off-image", "click outside image"),
        ("no-clicks", "no clicks"),
        ("bench", "imported"),
        ("ghost", "unknown image"),
        ("escapee", "path escapes image root"),
    ]
    assert statuses(report)["imported"] == len(objects) == 4
    car = objects[0]
    polygon = mask_utils.merge(mask_utils.frPyObjects([[10, 20, 30, 18, 34, 30, 12, 32]], H, W))
    assert car["final_counts"] == polygon["counts"].decode() and car["clicks"][2] == [14.0, 40.0, 0]
    assert car["extra"] == {"annotator": "maria", "seconds": 14.2, "label": "car"}
    bench = objects[3]
    assert (bench["height"], bench["width"]) == (30, 40) and rle.area([bench["final_counts"]], 30, 40)[0] == 50
    assert objects[2]["final_counts"] is None
