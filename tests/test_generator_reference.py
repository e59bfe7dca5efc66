"""Correctness anchor: under amg=reference the generator gives SamAutomaticMaskGenerator's masks."""

import numpy as np
import pytest
from images import shapes_image
from segment_anything import SamAutomaticMaskGenerator

from data_engine.amg.generator import MaskGenerator, sam_generator_settings
from data_engine.io import rle
from data_engine.model.build import build_sam

# Shrunk identically on both sides so the test stays fast on a CPU; the filters are opened up so that
# any model, however weakly trained, gives many masks to compare (NMS and clean-up then do the work).
SHRINK = [
    "amg.points_per_side=12",
    "amg.crop_n_layers=1",
    "amg.min_mask_region_area=30",
    "amg.pred_iou_thresh=0.0",
    "amg.stability_score_thresh=0.0",
]


@pytest.fixture(scope="module")
def sam():
    return build_sam("tiny", device="cpu")


def reference_settings(make_cfg, *extra):
    return make_cfg("amg=reference", *SHRINK, *extra, small=False)["amg"]


def run_both(sam, amg: dict, image: np.ndarray):
    ref = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **sam_generator_settings(amg)).generate(image)
    ours = MaskGenerator(sam, **amg).generate(image)
    return ref, ours


def match_masks(ref: list[dict], ours: dict, height: int, width: int) -> list[tuple[int, float]]:
    """One-to-one: each reference mask takes an unused identical mask (closest predicted IoU first),
    else the unused one of highest IoU."""
    ref_counts, ours_counts = [r["segmentation"]["counts"] for r in ref], ours["segmentation"]
    iou = rle.iou_matrix(ref_counts, ours_counts, height, width)
    unused, pairs = set(range(len(ours_counts))), []
    for i, counts in enumerate(ref_counts):
        same = sorted(
            (j for j in unused if ours_counts[j] == counts),
            key=lambda j: abs(ours["predicted_iou"][j] - ref[i]["predicted_iou"]),
        )
        j = same[0] if same else max(unused, key=lambda k: iou[i, k])
        unused.discard(j)
        pairs.append((j, 1.0 if same else float(iou[i, j])))
    return pairs


def assert_same_masks(ref: list[dict], ours: dict, height: int, width: int):
    assert len(ours["segmentation"]) == len(ref)
    pairs = match_masks(ref, ours, height, width)
    assert min(iou for _, iou in pairs) >= 0.99
    match = [j for j, _ in pairs]
    np.testing.assert_allclose([r["predicted_iou"] for r in ref], np.array(ours["predicted_iou"])[match], atol=1e-4)
    np.testing.assert_allclose([r["stability_score"] for r in ref], np.array(ours["stability_score"])[match], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_preset_matches_segment_anything(make_cfg, sam, seed):
    image = shapes_image(seed)
    amg = reference_settings(make_cfg)
    ref, ours = run_both(sam, amg, image)
    assert len(ref) >= 3, "too few masks for the comparison to mean anything"
    assert_same_masks(ref, ours, *image.shape[:2])


def test_reference_preset_matches_with_two_crop_layers(make_cfg, sam):
    """SA-1B's crop layers and small-region clean-up on both sides, SAM's semantics on ours."""
    image = shapes_image(2)
    amg = reference_settings(
        make_cfg,
        "amg.crop_n_layers=2",
        "amg.crop_n_points_downscale_factor=2",
        "amg.min_mask_region_area=100",
        "amg.points_per_side=8",
    )
    ref, ours = run_both(sam, amg, image)
    assert len(ref) >= 3
    assert_same_masks(ref, ours, *image.shape[:2])


def test_reference_preset_is_segment_anything_defaults(make_cfg):
    amg = make_cfg("amg=reference", small=False)["amg"]
    defaults = dict(
        points_per_side=32,
        points_per_batch=64,
        pred_iou_thresh=0.88,
        stability_score_thresh=0.95,
        stability_score_offset=1.0,
        box_nms_thresh=0.7,
        crop_n_layers=0,
        crop_nms_thresh=0.7,
        crop_n_points_downscale_factor=1,
        min_mask_region_area=0,
    )
    assert {k: amg[k] for k in defaults} == defaults
    assert amg["crop_overlap_ratio"] == pytest.approx(512 / 1500)
    assert amg["strict_iou_thresh"] and amg["keep_largest_small_region"] and amg["max_mask_area_frac"] is None
