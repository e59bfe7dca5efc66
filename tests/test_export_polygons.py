"""export.format=coco_polygons: masks -> polygons -> pycocotools (frPyObjects, decode) -> masks again."""

import json

import numpy as np
import pytest
from maskdata import rect, write_dataset
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage

from data_engine.config import validate
from data_engine.errors import ConfigError
from data_engine.exports.polygons import TOLERANCE, mask_polygons, to_polygons
from data_engine.io import rle
from data_engine.stages import run_stage
from data_engine.synth import scenes as synth


def rasterised(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The polygons as pycocotools draws them: bool [H, W]."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def random_masks(seed: int, count: int) -> list[np.ndarray]:
    """Noise of several densities and smooth blobs: diagonal contacts, one-pixel parts, holes, image borders."""
    rng = np.random.default_rng(seed)
    masks = []
    for k in range(count):
        h, w = (int(v) for v in rng.integers(2, 60, 2))
        if k % 2:
            mask = rng.random((h, w)) < (0.15, 0.5, 0.8)[k % 3]
        else:
            mask = ndimage.gaussian_filter(rng.random((h, w)), 1.5) > 0.5
        if mask.any():
            masks.append(mask)
    return masks


def scene_masks(scenes: int = 6) -> list[np.ndarray]:
    return [o["mask"] for i in range(scenes) for o in synth.make_scene(7, i)["objects"]]


def test_the_exact_outline_draws_back_the_mask_with_its_holes_filled():
    for mask in random_masks(seed=0, count=200):
        polygons, holes = mask_polygons(mask, tolerance=0)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
        filled = ndimage.binary_fill_holes(mask)
        assert np.array_equal(rasterised(polygons, *mask.shape), filled)
        assert (holes > 0) == (not np.array_equal(filled, mask))


@pytest.mark.parametrize(("tolerance", "floor"), [(TOLERANCE, 0.96), (1.0, 0.92)])
def test_simplified_polygons_round_trip_above_the_floor(tolerance, floor):
    """On synthetic scenes' object masks (holes included, median area about 600 px): mean IoU of the
    rasterised polygons with the mask (benchmarks/polygon_tolerance.py prints the same figures)."""
    masks = scene_masks()
    exact, simple = [], []
    ious = []
    for mask in masks:
        exact.append(sum(map(len, mask_polygons(mask, 0)[0])))
        polygons, _ = mask_polygons(mask, tolerance)
        simple.append(sum(map(len, polygons)))
        ious.append(iou(rasterised(polygons, *mask.shape), mask))
    assert np.mean(ious) >= floor
    assert sum(simple) < sum(exact) / 2  # the tolerance simplifies


def test_tiny_and_thin_masks_keep_a_valid_polygon():
    dot, line = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    dot[4, 4] = True
    line[2, 1:8] = True
    for mask in (dot, line):
        polygons, _ = mask_polygons(mask, tolerance=2.0)
        assert polygons and all(len(p) >= 6 for p in polygons)
        assert rasterised(polygons, 9, 9)[mask].all()


def test_holes_are_filled_and_counted():
    ring = rect(40, 40, 5, 5, 35, 35) & ~rect(40, 40, 15, 15, 25, 25)
    polygons, holes = mask_polygons(ring, tolerance=0)
    assert len(polygons) == 1 and holes == 1
    assert np.array_equal(rasterised(polygons, 40, 40), rect(40, 40, 5, 5, 35, 35))
    annotation = {"id": 3, "segmentation": {"size": [40, 40], "counts": rle.encode(ring[None])[0]}, "area": 800}
    converted, report = to_polygons([annotation], tolerance=0)
    assert converted[0]["segmentation"] == polygons and converted[0]["area"] == 800
    assert report["masks_with_holes_filled"] == 1
    assert report["polygon_iou_min"] == pytest.approx(800 / 900, abs=1e-4)


def test_export_stage_writes_polygons_pycocotools_reads(make_cfg, tmp_path):
    masks = [rect(64, 80, 0, 0, 40, 40), rect(64, 80, 10, 50, 20, 80), rect(64, 80, 45, 5, 64, 30)]
    ds = write_dataset(tmp_path / "ds", {"sub/a.png": masks[:2], "b.png": masks[2:]})
    cfg = make_cfg("stage=export", "export.format=coco_polygons", f"export.dataset={ds}", "export.polygon_tolerance=0")
    validate(cfg)
    summary = run_stage(cfg)
    assert (summary["masks"], summary["masks_with_holes_filled"], summary["polygon_iou_min"]) == (3, 0, 1.0)
    path = tmp_path / "out" / "coco_polygons" / "instances.json"
    doc = json.loads(path.read_text())
    assert all(isinstance(a["segmentation"], list) for a in doc["annotations"])
    coco = COCO(str(path))
    drawn = sorted(rle.encode(np.stack([coco.annToMask(a).astype(bool) for a in doc["annotations"]])))
    assert drawn == sorted(rle.encode(np.stack(masks)))
    with pytest.raises(ConfigError, match="export.polygon_tolerance"):
        validate(
            make_cfg(
                "stage=export", "export.format=coco_polygons", f"export.dataset={ds}", "export.polygon_tolerance=-1"
            )
        )
