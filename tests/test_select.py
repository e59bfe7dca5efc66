"""The steps after the model (amg/select.py): mask-IoU NMS removes the near-duplicates box NMS keeps."""

import numpy as np
import pytest
import torch

from data_engine.amg.generator import MaskGenerator, records
from data_engine.amg.select import Selection, near_duplicates, select_image
from data_engine.io import rle
from data_engine.model.build import build_sam
from data_engine.synth.scenes import make_scene

H, W = 80, 120


def batch(masks: list[np.ndarray], iou_preds: list[float]) -> dict:
    """A columnar batch of full-image masks, as the generator hands select_image."""
    boxes = [
        [int(np.flatnonzero(m.any(0))[0]), int(np.flatnonzero(m.any(1))[0])]
        + [int(np.flatnonzero(m.any(0))[-1]), int(np.flatnonzero(m.any(1))[-1])]
        for m in masks
    ]
    n = len(masks)
    return {
        "rles": rle.encode(np.stack(masks)),
        "boxes": torch.tensor(boxes),
        "iou_preds": torch.tensor(iou_preds),
        "points": torch.zeros(n, 2, dtype=torch.float64),
        "stability": torch.ones(n),
        "crop_boxes": torch.tensor([[0, 0, W, H]] * n),
    }


def square_with_tail():
    """A square, the same square with a 1-px tail that doubles its box, and a separate disc."""
    square = np.zeros((H, W), bool)
    square[20:60, 10:50] = True
    tailed = square.copy()
    tailed[40, 50:115] = True
    disc = np.zeros((H, W), bool)
    yy, xx = np.mgrid[:H, :W]
    disc[(yy - 20) ** 2 + (xx - 95) ** 2 < 100] = True
    return [square, tailed, disc]


def test_mask_nms_removes_a_near_duplicate_that_box_nms_keeps():
    masks = square_with_tail()
    codes = rle.encode(np.stack(masks))
    assert rle.iou_matrix(codes[:1], codes[1:2], H, W)[0, 0] > 0.95
    data = batch(masks, [0.8, 0.9, 0.7])
    s = Selection(min_mask_region_area=0)
    kept = select_image([data], 1, H, W, s)
    assert len(kept["rles"]) == 3  # box NMS (at 0.7) keeps both: their boxes differ
    assert near_duplicates(kept["rles"], H, W, 0.9) == 2
    deduped = select_image([data], 1, H, W, Selection(min_mask_region_area=0, mask_nms_thresh=0.9))
    # the better-ranked of the pair (predicted IoU 0.9: the tailed square) stays, the order is kept
    assert deduped["iou_preds"].tolist() == pytest.approx([0.9, 0.7])
    assert near_duplicates(deduped["rles"], H, W, 0.9) == 0


def test_mask_nms_above_every_pairs_iou_changes_nothing():
    data = batch(square_with_tail(), [0.8, 0.9, 0.7])
    kept = select_image([data], 1, H, W, Selection(min_mask_region_area=0, mask_nms_thresh=0.99))
    assert kept["rles"] == data["rles"]


@pytest.fixture(scope="module")
def scene_masks():
    sam = build_sam("tiny", device="cpu")
    image = make_scene(3, 3, 128, 160)["image"]
    base = dict(points_per_side=12, crop_n_layers=0, pred_iou_thresh=0.3, stability_score_thresh=0.5)
    return image, MaskGenerator(sam, **base).generate(image), MaskGenerator(sam, mask_nms_thresh=0.6, **base)


def test_generator_mask_nms_keeps_a_subset_with_no_pair_above_it(scene_masks, one_thread):
    image, plain, generator = scene_masks
    deduped = generator.generate(image)
    assert set(deduped["segmentation"]) <= set(plain["segmentation"])
    h, w = image.shape[:2]
    iou = rle.iou_matrix(deduped["segmentation"], deduped["segmentation"], h, w)
    np.fill_diagonal(iou, 0)
    assert iou.max(initial=0) < 0.6
    removed = len(plain["segmentation"]) - len(deduped["segmentation"])
    assert removed >= 1 and near_duplicates(plain["segmentation"], h, w, 0.6) >= 2


def test_records_of_nothing_are_empty_columns():
    assert records({"rles": []}, H, W)["segmentation"] == []
