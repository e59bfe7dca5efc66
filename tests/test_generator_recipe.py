"""The SA-1B recipe's filters, on a model whose masks are known: a scripted prompt encoder and decoder.

For a point prompt the scripted decoder returns three masks with fixed predicted IoUs:
  0: the whole image (IoU 0.95); 1: a disc of radius 24 px around the point (IoU 0.92);
  2: a disc of radius 12 px (IoU 0.5). Disc logits fall linearly with distance (slope 2.5 per px).
"""

import numpy as np
import pytest
import torch

from data_engine.amg.generator import MaskGenerator
from data_engine.io import rle
from data_engine.model.build import build_sam


class ScriptedPrompts(torch.nn.Module):
    def forward(self, points, boxes, masks):
        coords, _ = points
        return coords.float(), torch.zeros(len(coords), 1, 1, 1)  # pass the points straight through

    def get_dense_pe(self):
        return torch.zeros(1)


class ScriptedDecoder(torch.nn.Module):
    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        points = sparse_prompt_embeddings[:, 0, :] / 4  # low-res (64 x 64) coordinates
        ys, xs = torch.meshgrid(torch.arange(64.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")
        dist = ((xs[None] - points[:, 0, None, None]) ** 2 + (ys[None] - points[:, 1, None, None]) ** 2).sqrt()
        whole = torch.full_like(dist, 20.0)
        # 2.5 logits per image px = 10 per low-res px (a low-res px is 4 image px at 256 input)
        big, small = 10 * (24 / 4 - dist), 10 * (12 / 4 - dist)
        logits = torch.stack([whole, big, small], 1)
        iou = torch.tensor([0.95, 0.92, 0.5]).expand(len(points), 3)
        return logits, iou


@pytest.fixture(scope="module")
def scripted():
    sam = build_sam("tiny", device="cpu")
    sam.prompt_encoder, sam.mask_decoder = ScriptedPrompts(), ScriptedDecoder()
    return sam


def generate(sam, make_cfg, *overrides, size=(256, 256)):
    amg = make_cfg(*overrides, small=False)["amg"]
    image = np.full((*size, 3), 100, np.uint8)
    return MaskGenerator(sam, **amg).generate(image)


def test_sa1b_recipe_drops_whole_image_and_low_iou_masks(scripted, make_cfg):
    out = generate(scripted, make_cfg, "amg.points_per_side=2", "amg.crop_n_layers=0")
    # 2x2 grid at 64 / 192 px: four separate 24 px discs; the whole-image masks are >= 95% of the image
    assert len(out["segmentation"]) == 4
    assert all(iou == pytest.approx(0.92) for iou in out["predicted_iou"])
    areas = np.array(out["area"])
    assert np.all(np.abs(areas - np.pi * 24**2) < 0.05 * np.pi * 24**2)


def test_reference_keeps_the_whole_image_mask(scripted, make_cfg):
    # (stability threshold lowered: with logits -1/+1 the discs score about 0.935)
    out = generate(scripted, make_cfg, "amg=reference", "amg.points_per_side=2", "amg.stability_score_thresh=0.9")
    assert max(out["area"]) == 256 * 256
    assert len(out["segmentation"]) == 5  # four discs + one whole-image mask left by NMS


def test_pred_iou_threshold_is_inclusive_by_default_and_strict_in_reference(scripted, make_cfg):
    base = ["amg.points_per_side=2", "amg.crop_n_layers=0", "amg.max_mask_area_frac=null"]
    # The small discs (IoU 0.5) are kept only when the threshold admits 0.5
    inclusive = generate(scripted, make_cfg, *base, "amg.pred_iou_thresh=0.5", "amg.box_nms_thresh=1.0")
    strict = generate(
        scripted, make_cfg, *base, "amg.pred_iou_thresh=0.5", "amg.box_nms_thresh=1.0", "amg.strict_iou_thresh=true"
    )
    assert 0.5 in [round(v, 3) for v in inclusive["predicted_iou"]]
    assert 0.5 not in [round(v, 3) for v in strict["predicted_iou"]]


def test_stability_levels_decide_what_survives(scripted, make_cfg):
    """A 24 px disc with logits sloping 2.5 per px: p 0.5/0.55 -> stability ~0.99; logits -1/+1 -> ~0.93."""
    base = ["amg.points_per_side=2", "amg.crop_n_layers=0"]
    assert len(generate(scripted, make_cfg, *base)["segmentation"]) == 4
    stabilities = generate(scripted, make_cfg, *base, "amg.stability_score_thresh=0")["stability_score"]
    assert min(stabilities) > 0.98
    assert generate(scripted, make_cfg, "amg=sa1b_paper", *base)["segmentation"] == []


def test_masks_touching_inner_crop_edges_are_dropped(scripted, make_cfg):
    out = generate(
        scripted, make_cfg, "amg.points_per_side=2", "amg.crop_n_layers=1", "amg.crop_n_points_downscale_factor=1"
    )
    assert any(crop != [0, 0, 256, 256] for crop in out["crop_box"]), "no mask from a zoomed crop to check"
    for counts, crop in zip(out["segmentation"], out["crop_box"]):
        if crop == [0, 0, 256, 256]:
            continue
        mask = rle.decode(counts, 256, 256)
        x, y, w, h = (int(v) for v in crop)
        inner_edges = [c for c, at_border in ((x, x == 0), (x + w - 1, x + w == 256)) if not at_border]
        for col in inner_edges:
            assert not mask[:, max(col - 20, 0) : col + 20].any()


def test_small_regions_removed_from_every_output_mask(scripted, make_cfg):
    out = generate(scripted, make_cfg, "amg.points_per_side=2", "amg.crop_n_layers=0", "amg.min_mask_region_area=5000")
    # The 24 px discs (about 1810 px) are all smaller than 5000 px: SA-1B removes them entirely
    assert out["segmentation"] == []
    kept = generate(
        scripted,
        make_cfg,
        "amg=reference",
        "amg.points_per_side=2",
        "amg.min_mask_region_area=5000",
        "amg.max_mask_area_frac=0.95",
        "amg.stability_score_thresh=0.9",
    )
    assert len(kept["segmentation"]) == 4  # the released code keeps each disc as its own largest island


def test_chunked_upsampling_gives_the_same_masks(scripted, make_cfg):
    whole = generate(scripted, make_cfg, "amg.points_per_side=3", "amg.crop_n_layers=1")
    chunked = generate(
        scripted, make_cfg, "amg.points_per_side=3", "amg.crop_n_layers=1", f"amg.max_upsample_pixels={256 * 256}"
    )  # one mask per chunk
    assert len(whole["segmentation"]) > 0
    assert whole == chunked
