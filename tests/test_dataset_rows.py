"""io/dataset.py's row builders: an image row (ok or failed) and mask rows written as a shard read back the same."""

import numpy as np
from maskdata import rect

from data_engine.io import rle
from data_engine.io.dataset import IMAGE_SCHEMA, image_row, mask_row, read_images, read_masks, write_shard


def test_image_rows_ok_and_failed_read_back_from_a_shard(tmp_path):
    image = {"image_id": 11, "file_name": "a.png", "height": 20, "width": 30, "other": "ignored"}
    counts = rle.encode(np.stack([rect(20, 30, 0, 0, 5, 5), rect(20, 30, 10, 10, 20, 30)]))
    masks = [mask_row(image, c, stage="auto", source="test") for c in counts]
    ok = image_row(image, num_masks=len(masks), seconds=0.25)
    undecodable = image_row({"image_id": 12, "file_name": "b.jpg"}, seconds=0.5, error="ImageError: truncated")
    assert list(ok) == IMAGE_SCHEMA.names
    assert (ok["status"], ok["error"], ok["num_masks"]) == ("ok", None, 2)
    assert (undecodable["status"], undecodable["height"], undecodable["num_masks"]) == ("failed", None, 0)

    write_shard(tmp_path, "shard-000000000", masks, [ok, undecodable])
    assert read_images(tmp_path).to_pylist() == [
        {"image_id": 11, "file_name": "a.png", "height": 20, "width": 30, "status": "ok", "error": None,
         "num_masks": 2, "seconds": 0.25},
        {"image_id": 12, "file_name": "b.jpg", "height": None, "width": None, "status": "failed",
         "error": "ImageError: truncated", "num_masks": 0, "seconds": 0.5},
    ]  # fmt: skip
    assert read_masks(tmp_path, ["image_id", "area"]).to_pylist() == [
        {"image_id": 11, "area": 25},
        {"image_id": 11, "area": 200},
    ]


def test_a_failed_image_may_keep_masks():
    # assisted: a failed click replay keeps the annotator's masks
    row = image_row({"image_id": 1, "file_name": "a.png", "height": 4, "width": 4}, num_masks=3, error="click replay")
    assert (row["status"], row["num_masks"], row["height"]) == ("failed", 3, 4)
