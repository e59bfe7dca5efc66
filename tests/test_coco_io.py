"""io/coco.py: the image entries and annotations it builds read back through pycocotools as the same masks."""

import numpy as np
from maskdata import rect
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data_engine.io import coco, rle
from data_engine.io.dataset import mask_row

H, W = 37, 53  # not square: a swapped height and width shows


def masks() -> list[np.ndarray]:
    ring = rect(H, W, 5, 5, 30, 40) & ~rect(H, W, 10, 10, 25, 35)
    corner = rect(H, W, 30, 45, H, W)
    diagonal = np.eye(H, W, dtype=bool)
    return [ring, corner, diagonal]


def test_annotations_round_trip_through_pycocotools(tmp_path):
    image = {"image_id": np.int64(7), "file_name": "sub/a.png", "height": H, "width": W}
    counts = rle.encode(np.stack(masks()))
    built = [coco.annotation(k + 1, 7, c, H, W) for k, c in enumerate(counts)]  # area and box from the RLE
    rows = [mask_row(image, c, stage="auto", source="test") for c in counts]
    from_rows = [coco.row_annotation(r, 10 + k, r["image_id"], score=0.5) for k, r in enumerate(rows)]
    path = tmp_path / "instances.json"
    coco.write(path, [coco.image_entry(image, image["image_id"])], built + from_rows)

    api = COCO(str(path))
    assert api.loadImgs(7) == [{"id": 7, "file_name": "sub/a.png", "height": H, "width": W}]
    assert api.getCatIds() == [1]
    for ann_id, mask in zip([1, 2, 3, 10, 11, 12], masks() * 2):
        ann = api.loadAnns(ann_id)[0]
        assert np.array_equal(api.annToMask(ann).astype(bool), mask), ann_id
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0 and ann["image_id"] == 7
        expected_box = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()
        assert ann["bbox"] == expected_box
    assert api.loadAnns(10)[0]["score"] == 0.5


def test_given_area_box_and_fields_are_kept_in_order():
    counts = rle.encode(rect(H, W, 0, 0, 2, 3)[None])[0]
    ann = coco.annotation(4, 2, counts, H, W, area=99, bbox=[1.0, 2.0, 3.0, 4.0], category_id=3, iscrowd=1, note="x")
    assert list(ann) == ["id", "image_id", "category_id", "iscrowd", "segmentation", "area", "bbox", "note"]
    assert ann["segmentation"] == {"size": [H, W], "counts": counts}
    assert (ann["area"], ann["bbox"], ann["category_id"], ann["iscrowd"]) == (99, [1.0, 2.0, 3.0, 4.0], 3, 1)


def test_categories_number_labels_in_order():
    categories, ids = coco.categories(["car", "object"])
    assert ids == {"car": 1, "object": 2}
    assert categories == [
        {"id": 1, "name": "car", "supercategory": "object"},
        {"id": 2, "name": "object", "supercategory": "object"},
    ]
