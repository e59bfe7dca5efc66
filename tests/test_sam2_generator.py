"""Correctness anchor for SAM 2.1: under amg=sam2 the generator gives SAM2AutomaticMaskGenerator's masks.

Both sides run the smallest Hiera (sam2.1_hiera_t) with seeded random weights at a 256-px input so that the
test stays fast on a CPU; SAM 2's predictor is given the feature sizes of that input (it is written for
1024 px). Random weights draw masks that each cover much of the image, so box NMS would keep one of them:
NMS is opened (IoU 1.0 keeps every mask) and the predicted-IoU and stability filters sit in the middle of
the masks' figures, so that each comparison holds dozens of distinct masks.
"""

import copy
import inspect

import numpy as np
import pytest
import torch
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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sam2_preset_matches_sam2_automatic_mask_generator_on_cuda(make_cfg, sam2_model):  # noqa: F811
    model = copy.deepcopy(sam2_model).to("cuda")
    image = shapes_image(0, 160, 200)
    amg = make_cfg("amg=sam2", *OPEN, "amg.use_m2m=true", small=False)["amg"]
    ref, ours = run_both(model, amg, image)
    assert len(ref) >= 20
    assert_same_masks(ref, ours, *image.shape[:2])


def test_sam2_options_on_a_sam_model_refine_as_sam_predictor_does():
    """use_m2m on a SAM: each of a point's 3 masks decoded again from the point and its own low-res logits,
    one output each (what SamPredictor gives for the same prompts)."""
    from segment_anything import SamPredictor

    from data_engine.io import rle
    from data_engine.model.build import build_sam

    sam, image = build_sam("tiny", device="cpu"), shapes_image(5)
    open_filters = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, max_mask_area_frac=None)
    settings = dict(points_per_side=1, crop_n_layers=0, min_mask_region_area=0, **open_filters)
    ours = mask_generator(sam, use_m2m=True, **settings).generate(image)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    point, label = np.array([[image.shape[1] / 2, image.shape[0] / 2]]), np.array([1])
    _, _, low_res = predictor.predict(point_coords=point, point_labels=label, multimask_output=True)
    expected = [
        predictor.predict(point_coords=point, point_labels=label, mask_input=lr[None], multimask_output=False)
        for lr in np.clip(low_res, -32, 32)
    ]
    assert len(ours["segmentation"]) == 3
    for counts, iou in zip(ours["segmentation"], ours["predicted_iou"]):
        mask = rle.decode(counts, *image.shape[:2])
        assert any(rle.mask_iou(mask, m[0]) >= 0.99 and abs(iou - s[0]) < 1e-4 for m, s, _ in expected)
    single = mask_generator(sam, multimask_output=False, **settings).generate(image)
    masks, scores, _ = predictor.predict(point_coords=point, point_labels=label, multimask_output=False)
    assert len(single["segmentation"]) == 1 and single["predicted_iou"][0] == pytest.approx(scores[0], abs=1e-4)
    assert rle.mask_iou(rle.decode(single["segmentation"][0], *image.shape[:2]), masks[0]) >= 0.99


def test_sam2_generator_keeps_candidates_the_sweep_selects_again(make_cfg, sam2_model):  # noqa: F811
    """The SAM 2.1 generator shares MaskGenerator's steps after the model (amg/select.py): its candidates,
    selected again at its own settings as stage=sweep does, give its masks; mask-IoU NMS applies too."""
    from data_engine.amg import candidates
    from data_engine.amg.generator import image_crops, records

    image = shapes_image(2, 160, 200)
    h, w = image.shape[:2]
    above_floors = ["amg.pred_iou_thresh=0.53", "amg.stability_score_thresh=0.6", "amg.min_mask_region_area=20"]
    amg = make_cfg("amg=sam2", *OPEN, *above_floors, small=False)["amg"]
    plain = mask_generator(sam2_model, **amg).generate(image)
    generator = mask_generator(sam2_model, **{**amg, "keep_candidates": True})
    kept = generator.generate(image)
    found = kept.pop("candidates")
    assert kept == plain and len(found["segmentation"]) > len(plain["segmentation"]) >= 10
    table = candidates.image_table(found, {"image_id": 7, "file_name": "a.png", "height": h, "width": w})
    n_crops = len(image_crops((h, w), amg["crop_n_layers"], amg["crop_overlap_ratio"]))
    again = candidates.select(candidates.by_image(table)[7], n_crops, h, w, generator.selection)
    assert records(again, h, w) == plain
    deduped = mask_generator(sam2_model, **{**amg, "mask_nms_thresh": 0.9}).generate(image)
    assert 0 < len(deduped["segmentation"]) < len(plain["segmentation"])
