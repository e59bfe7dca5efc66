"""Synthetic scenes: masks exact (re-rasterized from the layers), deterministic, and the stage's outputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from data_engine.errors import ConfigError
from data_engine.io import coco, inputs, rle
from data_engine.io.dataset import read_images, read_masks
from data_engine.stages import run_stage
from data_engine.synth import scenes as synth


def topmost(layers: list[dict], height: int, width: int) -> np.ndarray:
    """Index of the topmost layer per pixel, computed top-down (independently of synth.top_layer_map)."""
    top = np.full((height, width), -1)
    for i in reversed(range(len(layers))):
        free = top < 0
        top[free & synth.rasterize(layers[i]["geometry"], height, width)] = i
    return top


@pytest.mark.parametrize("index", range(6))
def test_masks_are_the_visible_pixels_of_their_layers(index):
    scene = synth.make_scene(seed=3, index=index)
    top = topmost(scene["layers"], scene["height"], scene["width"])
    for obj in scene["objects"]:
        assert np.array_equal(obj["mask"], np.isin(top, obj["layers"])), obj["shape"]
        if obj["parent"] is not None:  # a part lies inside its whole, a subpart inside its part
            parent = scene["objects"][obj["parent"]]["mask"]
            assert not (obj["mask"] & ~parent).any()
            assert obj["mask"].sum() < parent.sum()


def test_primitives_rasterize_exactly():
    rect = synth.rasterize([["+", {"poly": [[10, 20], [30, 20], [30, 40], [10, 40]]}]], 64, 64)
    expected = np.zeros((64, 64), bool)
    expected[20:41, 10:31] = True
    assert np.array_equal(rect, expected)
    ring = synth.rasterize([["+", {"ellipse": [32, 32, 20, 20, 0]}], ["-", {"ellipse": [32, 32, 10, 10, 0]}]], 64, 64)
    ys, xs = np.mgrid[:64, :64]
    r = np.hypot(xs - 32, ys - 32)
    analytic = (r <= 20) & (r > 10)
    assert not ring[32, 32] and ring[32, 32 + 15]
    assert (ring & analytic).sum() / (ring | analytic).sum() > 0.9
    stroke = synth.rasterize([["+", {"stroke": [[5, 5], [55, 5]], "width": 3}]], 64, 64)
    assert stroke[5, 30] and stroke[4, 30] and not stroke[10, 30]


def test_scenes_are_deterministic_and_differ_by_seed():
    a, b = synth.make_scene(5, 7), synth.make_scene(5, 7)
    assert a["image"].tobytes() == b["image"].tobytes()
    assert len(a["objects"]) == len(b["objects"])
    assert all(np.array_equal(x["mask"], y["mask"]) for x, y in zip(a["objects"], b["objects"]))
    assert synth.make_scene(6, 7)["image"].tobytes() != a["image"].tobytes()


def test_scenes_cover_the_variety_the_engine_needs():
    scenes = [synth.make_scene(11, i) for i in range(40)]
    objects = [o for s in scenes for o in s["objects"]]
    shapes = {o["shape"] for o in objects}
    assert set(synth.SIMPLE_SHAPES) <= shapes and set(synth.COMPOSITES) <= shapes
    assert {o["level"] for o in objects} == {"whole", "part", "subpart"}
    areas = [int(o["mask"].sum()) for o in objects]
    assert min(areas) < 100 and max(areas) > 20_000
    # Occlusion: some object shows fewer pixels than its own layers draw
    occluded = sum(o["mask"].sum() < drawn(s, o).sum() for s in scenes[:10] for o in s["objects"])
    assert occluded > 0
    sizes = {(s["height"], s["width"]) for s in scenes}
    assert len(sizes) > 10 and all(256 <= min(hw) and max(hw) <= 512 for hw in sizes)


def drawn(scene: dict, obj: dict) -> np.ndarray:
    """All pixels an object's layers draw, occluded or not."""
    h, w = scene["height"], scene["width"]
    return np.any([synth.rasterize(scene["layers"][i]["geometry"], h, w) for i in obj["layers"]], axis=0)


def run_synth(make_cfg, out, *overrides):
    cfg = make_cfg("stage=synth", "synth.num_scenes=3", "synth.shard_size=2", f"output.dir={out}", *overrides)
    return run_stage(cfg)


def test_stage_writes_pictures_coco_and_parquet(make_cfg, tmp_path):
    summary = run_synth(make_cfg, tmp_path / "s")
    out = tmp_path / "s"
    assert summary["images"] == 3 and summary["masks"] > 0
    assert sorted(p.name for p in (out / "pictures").iterdir()) == [f"scene-0000{i}.png" for i in range(3)]
    masks = read_masks(out).to_pylist()
    images = read_images(out).to_pylist()
    assert {r["status"] for r in images} == {"ok"} and sum(r["num_masks"] for r in images) == len(masks)
    ids = {json.loads(r["extra"])["id"] for r in masks}
    for row in masks:
        extra = json.loads(row["extra"])
        assert row["stage"] == "synth" and row["source"] == "expert" and row["predicted_iou"] is None
        assert row["image_id"] == inputs.image_id(row["file_name"])
        assert extra["part_of"] is None or extra["part_of"] in ids
        assert row["area"] == rle.area([row["segmentation"]], row["height"], row["width"])[0]
    # The written masks are the generator's masks, and the picture is the generator's image
    scene = synth.make_scene(0, 1)
    rows = sorted((r for r in masks if r["file_name"] == "scene-00001.png"), key=lambda r: json.loads(r["extra"])["id"])
    assert len(rows) == len(scene["objects"])
    for row, obj in zip(rows, scene["objects"]):
        assert np.array_equal(rle.decode(row["segmentation"], row["height"], row["width"]), obj["mask"])
    picture = cv2.cvtColor(cv2.imread(str(out / "pictures" / "scene-00001.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(picture, scene["image"])
    # COCO holds the same masks
    doc = coco.load(out / "instances.json")
    assert len(doc["annotations"]) == len(masks) and len(doc["images"]) == 3
    by_id = {json.loads(r["extra"])["id"]: r["segmentation"] for r in masks}
    assert all(a["segmentation"]["counts"] == by_id[a["id"]] for a in doc["annotations"])


def test_stage_output_is_identical_across_runs(make_cfg, tmp_path):
    run_synth(make_cfg, tmp_path / "a")
    run_synth(make_cfg, tmp_path / "b")
    for name in ("pictures/scene-00000.png", "pictures/scene-00002.png", "instances.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read_masks(tmp_path / "a").equals(read_masks(tmp_path / "b"))


@pytest.mark.parametrize(
    "override", ["synth.num_scenes=0", "synth.min_size=600", "synth.max_objects=2", "synth.seed=-1"]
)
def test_bad_settings_fail_before_work(make_cfg, tmp_path, override):
    with pytest.raises(ConfigError, match="synth."):
        run_synth(make_cfg, tmp_path / "bad", override)
    assert not (tmp_path / "bad").exists()
