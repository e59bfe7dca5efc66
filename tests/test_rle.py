"""RLE helpers, including more masks per image than pycocotools' area() handles in one call."""

import numpy as np

from data_engine.io import rle


def test_area_bbox_and_decode_for_many_masks():
    masks = np.zeros((600, 12, 16), bool)
    for i in range(600):
        masks[i, i % 5 : (i % 5) + 3, : 1 + i % 16] = True
    counts = rle.encode(masks)
    assert rle.area(counts, 12, 16).tolist() == masks.reshape(600, -1).sum(1).tolist()
    assert rle.bbox(counts, 12, 16)[7].tolist() == [0, 2, 8, 3]
    assert np.array_equal(rle.decode(counts[599], 12, 16), masks[599])
    assert rle.area([], 12, 16).shape == (0,)


def test_encoding_matches_pycocotools_on_non_square_masks():
    from pycocotools import mask as mask_utils

    masks = np.random.default_rng(0).random((5, 7, 11)) < 0.4
    expected = [
        r["counts"].decode("ascii")
        for r in mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    ]
    assert rle.encode(masks) == expected
    # The same masks stored transposed ([N, W, H]) give the same RLE
    assert rle.encode_transposed(np.ascontiguousarray(masks.transpose(0, 2, 1))) == expected
    assert rle.encode(np.zeros((0, 7, 11), bool)) == []


def test_runs_found_on_the_masks_device_give_pycocotools_rle():
    import torch

    rng = np.random.default_rng(1)
    masks = rng.random((6, 9, 13)) < 0.5  # [N, W, H] stored transposed
    masks[0] = False  # empty
    masks[1] = True  # full: one run of background of length 0 first
    masks[2, 0, 0] = True  # first pixel set
    masks[3, -1, -1] = True  # last pixel set
    masks[4] = False
    masks[4, 4, 5] = True  # a single pixel
    expected = rle.encode_transposed(masks)
    assert rle.encode_transposed_runs(torch.as_tensor(masks)) == expected
    assert rle.encode_transposed_runs(torch.zeros(0, 9, 13, dtype=torch.bool)) == []
    assert rle.encode_transposed_runs(torch.ones(2, 1, 1, dtype=torch.bool)) == rle.encode_transposed(
        np.ones((2, 1, 1), bool)
    )
