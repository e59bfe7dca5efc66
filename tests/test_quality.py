"""Figures of data_engine/train/evaluate.py: where correction clicks land, per-group means, grid-prompt IoUs."""

from __future__ import annotations

import numpy as np
import torch
from segment_anything import SamPredictor

from data_engine.io import rle
from data_engine.model.build import build_sam
from data_engine.synth import scenes as synth
from data_engine.train.evaluate import correction_click, grid_mask_ious, group_means


def square(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((60, 80), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_missed_region_gets_a_positive_click_inside_it():
    target = square(10, 50, 10, 70)
    prediction = square(10, 50, 10, 30)  # the right two thirds are missed
    x, y, label = correction_click(prediction, target)
    assert label == 1
    assert 30 <= x < 70 and 10 <= y < 50 and not prediction[int(y), int(x)]


def test_false_region_gets_a_negative_click_outside_the_target():
    target = square(20, 40, 20, 40)
    prediction = square(5, 55, 5, 75)  # far too big
    x, y, label = correction_click(prediction, target)
    assert label == 0
    assert not target[int(y), int(x)] and prediction[int(y), int(x)]


def test_click_goes_to_the_largest_error_region():
    target = square(10, 50, 10, 70)
    prediction = target.copy()
    prediction[10:14, 10:14] = False  # small miss, top left
    prediction[30:50, 50:70] = False  # large miss, bottom right
    x, y, label = correction_click(prediction, target)
    assert label == 1 and 50 <= x < 70 and 30 <= y < 50


def test_group_means_split_objects_by_size_and_level():
    ious = [0.2, 0.6, 0.9, 1.0]
    kinds = [(150, "part"), (399, "subpart"), (400, "whole"), (5000, "whole")]
    means = group_means(ious, kinds)
    assert means["under 400 px"] == 0.4 and means["400 px and more"] == 0.95
    assert means["wholes"] == 0.95 and means["parts"] == 0.2 and means["subparts"] == 0.6


def test_group_means_leave_out_empty_groups():
    assert group_means([0.5], [(1000, "whole")]) == {"400 px and more": 0.5, "wholes": 0.5}


def test_grid_mask_ious_give_each_mask_its_best_iou_against_the_objects(one_thread):
    scene = synth.make_scene(4242, 0)
    predictor = SamPredictor(build_sam("tiny", device="cpu"))
    with torch.no_grad():
        predicted, true = grid_mask_ious(predictor, scene, side=4)
        # the grid's first point (the centre of the top-left cell), prompted on its own
        point = np.array([[scene["width"] / 8, scene["height"] / 8]])
        masks, scores, _ = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)
    assert predicted.shape == true.shape == (4 * 4 * 3,)
    assert ((true >= 0) & (true <= 1)).all()
    np.testing.assert_allclose(predicted[:3], scores, atol=1e-5)
    best = [max(rle.mask_iou(m, o["mask"]) for o in scene["objects"]) for m in masks]
    np.testing.assert_allclose(true[:3], best, atol=1e-6)
