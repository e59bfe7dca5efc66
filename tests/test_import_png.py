"""PNG mask folders: one binary PNG per mask (SAM amg.py layout) and one instance-label PNG per image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from assisted_data import make_images, outcome, statuses
from PIL import Image

from data_engine.importers import import_annotations
from data_engine.io import rle
from data_engine.io.inputs import InputError

H, W = 48, 64  # photos/street.jpg


@pytest.fixture
def root(tmp_path):
    return make_images(tmp_path / "images")


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_binary_masks_in_sam_amg_layout(root, tmp_path):
    masks = tmp_path / "masks"
    car, sign = box(H, W, 18, 32, 10, 34), box(H, W, 5, 15, 40, 50)
    save(masks / "photos" / "street" / "0.png", car.astype(np.uint8) * 255)  # 8-bit grey
    Image.fromarray(sign).save(masks / "photos" / "street" / "1.png")  # 1-bit
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[30:40, 44:56] = (0, 200, 0, 255)
    save(masks / "photos" / "street" / "2.png", rgba)  # RGBA colour
    (masks / "photos" / "street" / "metadata.csv").write_text("id,area\n0,336\n")  # amg.py writes this too
    save(masks / "photos" / "park" / "0.png", box(30, 40, 8, 13, 8, 13).astype(np.uint8))
    save(masks / "photos" / "square" / "0.png", np.ones((10, 10), np.uint8))  # image is 50x50
    save(masks / "photos" / "gone" / "0.png", np.ones((10, 10), np.uint8))  # no such image
    save(masks / "stray.png", np.ones((10, 10), np.uint8))  # not in an image folder
    save(masks / "photos" / "park" / "1.png", np.zeros((30, 40), np.uint8))  # nothing drawn
    (masks / "photos" / "park" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt file

    rows, report = import_annotations("png_masks", str(masks), str(root))
    assert outcome(report) == [
        ("photos/gone/0.png", "unknown image"),
        ("photos/park/0.png", "imported"),
        ("photos/park/1.png", "empty mask"),
        ("photos/park/2.png", "unreadable mask"),
        ("photos/square/0.png", "size mismatch"),
        ("photos/street/0.png", "imported"),
        ("photos/street/1.png", "imported"),
        ("photos/street/2.png", "imported"),
        ("stray.png", "unknown image"),
    ]
    assert statuses(report)["imported"] == len(rows) == 4
    street = {json.loads(r["extra"])["original_id"]: r for r in rows if r["file_name"] == "photos/street.jpg"}
    for key, expected in [
        ("photos/street/0.png", car),
        ("photos/street/1.png", sign),
        ("photos/street/2.png", box(H, W, 30, 40, 44, 56)),
    ]:
        assert (rle.decode(street[key]["segmentation"], H, W) == expected).all()
    assert {r["source"] for r in rows} == {"human"} and {r["stage"] for r in rows} == {"assisted"}


def test_label_images_grey_16bit_palette_and_rgb(root, tmp_path):
    labels = tmp_path / "labels"
    grey = np.zeros((H, W), np.uint8)
    grey[18:32, 10:34], grey[5:15, 40:50] = 1, 2
    save(labels / "photos" / "street.png", grey)
    deep = np.zeros((30, 40), np.uint16)
    deep[0:5, 0:5], deep[20:30, 20:30] = 300, 7
    Image.fromarray(deep).save(labels / "photos" / "park.png")
    rows, report = import_annotations("png_labels", str(labels), str(root))
    assert outcome(report) == [
        ("label 7", "imported"),
        ("label 300", "imported"),
        ("label 1", "imported"),
        ("label 2", "imported"),
    ]
    park = {json.loads(r["extra"])["original_id"]: r for r in rows if r["file_name"] == "photos/park.png"}
    assert park[300]["area"] == 25 and park[7]["bbox"] == [20.0, 20.0, 10.0, 10.0]

    # palette image with VOC's 255 border, and an RGB (panoptic-style) label image
    voc = np.zeros((50, 50), np.uint8)
    voc[10:20, 10:20], voc[9, 9:21] = 1, 255
    palette = Image.fromarray(voc, "P")
    palette.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])
    (labels / "photos").mkdir(exist_ok=True)
    palette.save(labels / "photos" / "square.png")
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0:4, 0:4] = (1, 1, 0)  # id 1 + 256 = 257
    save(labels / "photos" / "street.png", rgb)
    rows, report = import_annotations("png_labels", str(labels), str(root))
    got = {(r["file_name"], json.loads(r["extra"])["original_id"]): r["area"] for r in rows}
    assert got[("photos/square.png", 1)] == 100 and ("photos/square.png", 255) not in got
    assert got[("photos/street.jpg", 257)] == 16


def test_label_file_problems_count_once_per_file(root, tmp_path):
    labels = tmp_path / "labels"
    save(labels / "photos" / "street.png", np.ones((10, 10), np.uint8))  # wrong size
    save(labels / "photos" / "gone.png", np.ones((10, 10), np.uint8))  # no such image
    _, report = import_annotations("png_labels", str(labels), str(root))
    assert outcome(report) == [("(file)", "unknown image"), ("(file)", "size mismatch")]


def test_without_image_root_masks_are_named_by_their_path(tmp_path):
    labels = tmp_path / "labels"
    save(labels / "sub" / "a.png", box(20, 30, 2, 5, 2, 5).astype(np.uint8))
    rows, _ = import_annotations("png_labels", str(labels))
    assert [(r["file_name"], r["height"], r["width"], r["area"]) for r in rows] == [("sub/a", 20, 30, 9)]


def test_images_sharing_a_stem_are_ambiguous(tmp_path):
    root = make_images(tmp_path / "images", {"a.jpg": (10, 10), "a.png": (10, 10)})
    masks = tmp_path / "masks"
    save(masks / "a" / "0.png", np.ones((10, 10), np.uint8))
    _, report = import_annotations("png_masks", str(masks), str(root))
    assert outcome(report) == [("a/0.png", "ambiguous image")]


def test_mask_folder_inside_image_root_is_not_taken_for_images(tmp_path):
    root = make_images(tmp_path / "data", {"street.jpg": (W, H)})
    save(root / "masks" / "street" / "0.png", box(H, W, 0, 5, 0, 5).astype(np.uint8))
    rows, report = import_annotations("png_masks", str(root / "masks"), str(root))
    assert [r["file_name"] for r in rows] == ["street.jpg"] and len(report) == 1


def test_a_file_instead_of_a_folder_fails_clearly(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(InputError, match="not a folder"):
        import_annotations("png_masks", str(tmp_path / "x.png"), str(tmp_path))
