"""Correctness anchor for SAM 2.1: under amg=sam2 the generator gives SAM2AutomaticMaskGenerator's masks.

Both sides run the smallest Hiera (sam2.1_hiera_t) with seeded random weights at a 256-px input so that the
test stays fast on a CPU; SAM 2's predictor is given the feature sizes of that input (it is written for
1024 px). Random weights draw masks that each cover much of the image, so box NMS would keep one of them:
NMS is opened (IoU 1.0 keeps every mask) and the predicted-IoU and stability filters sit in the middle of
the masks' figures, so that each comparison holds dozens of distinct masks.
"""

import inspect

import numpy as np
import pytest
from images import shapes_image
from sam2_fixtures import SIDE, sam2_model  # noqa: F401
from test_generator_reference import assert_same_masks

from data_engine.amg.generator import mask_generator
from data_engine.amg.sam2_generator import Sam2MaskGenerator, sam2_generator_settings
from data_engine.model.sam2_model import Sam2Predictor

OPEN = [
    "amg.points_per_side=6",
    "amg.pred_iou_thresh=0.5",
    "amg.stability_score_thresh=0.5",
    "amg.box_nms_thresh=1.0",
    "amg.crop_nms_thresh=1.0",
]


def sam2_reference(model, amg: dict):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    reference = SAM2AutomaticMaskGenerator(model, output_mode="coco_rle", **sam2_generator_settings(amg))
    reference.predictor = Sam2Predictor(model)  # SAM2ImagePredictor with the feature sizes of a SIDE-px input
    return reference


def run_both(model, amg: dict, image: np.ndarray):
    ref = sam2_reference(model, amg).generate(image)
    ours = mask_generator(model, **amg).generate(image)
    return ref, ours


@pytest.mark.parametrize("extra", [[], ["amg.use_m2m=true"], ["amg.multimask_output=false"]])
def test_sam2_preset_matches_sam2_automatic_mask_generator(make_cfg, sam2_model, extra):  # noqa: F811
    image = shapes_image(0, 160, 200)
    amg = make_cfg("amg=sam2", *OPEN, *extra, small=False)["amg"]
    ref, ours = run_both(sam2_model, amg, image)
    assert len(ref) >= 20, "too few masks for the comparison to mean anything"
    assert_same_masks(ref, ours, *image.shape[:2])


def test_sam2_preset_matches_with_a_crop_layer(make_cfg, sam2_model):  # noqa: F811
    image = shapes_image(1, 160, 200)
    amg = make_cfg(
        "amg=sam2",
        *OPEN,
        "amg.points_per_side=4",
        "amg.crop_n_layers=1",
        "amg.crop_n_points_downscale_factor=2",
        small=False,
    )["amg"]
    ref, ours = run_both(sam2_model, amg, image)
    assert len(ref) >= 3
    assert_same_masks(ref, ours, *image.shape[:2])


def test_sam2_preset_is_sam2_automatic_mask_generator_defaults(make_cfg):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    amg = make_cfg("amg=sam2", small=False)["amg"]
    defaults = {k: p.default for k, p in inspect.signature(SAM2AutomaticMaskGenerator).parameters.items()}
    shared = sam2_generator_settings(amg)
    assert len(shared) == 12 and shared == {k: defaults[k] for k in shared}
    assert amg["min_mask_region_area"] == defaults["min_mask_region_area"] == 0
    assert amg["strict_iou_thresh"] and amg["max_mask_area_frac"] is None and amg["crops_per_batch"] == 1


def test_a_sam2_model_gets_the_sam2_generator(sam2_model):  # noqa: F811
    assert isinstance(mask_generator(sam2_model, points_per_side=4), Sam2MaskGenerator)
