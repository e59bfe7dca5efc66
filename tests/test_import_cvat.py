"""CVAT imports: 'CVAT for images 1.1' XML (polygons, boxes, ellipses, mask RLE) and the COCO 1.0 export."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from assisted_data import DATA, make_images, outcome, statuses
from pycocotools import mask as mask_utils

from data_engine.importers import import_annotations
from data_engine.io import rle
from data_engine.io.inputs import InputError

XML = DATA / "cvat" / "annotations.xml"


@pytest.fixture
def root(tmp_path):
    return make_images(tmp_path / "images")


def test_every_shape_is_imported_or_rejected_with_its_reason(root):
    rows, report = import_annotations("cvat_xml", str(XML), str(root))
    assert outcome(report) == [
        ("image 0 box[0]", "imported"),
        ("image 0 box[1]", "imported"),
        ("image 0 polygon[2]", "imported"),
        ("image 0 polyline[3]", "not a region"),
        ("image 0 points[4]", "not a region"),
        ("image 0 tag[5]", "not a region"),
        ("image 0 ellipse[6]", "imported"),
        ("image 0 mask[7]", "imported"),
        ("image 0 mask[8]", "bad RLE"),
        ("image 0 polygon[9]", "degenerate polygon"),
        ("image 1 polygon[0]", "imported"),
        ("image 2 polygon[0]", "size mismatch"),
        ("image 3 box[0]", "path escapes image root"),
        ("image 1 box[0]", "duplicate id"),
        ("image 4 mask[0]", "imported"),
    ]
    counts = statuses(report)
    assert counts["imported"] == len(rows) == 7 and counts["imported"] + counts["rejected"] == 15
    # a rejected shape names its image whenever the name is safe, the repeated image id's too
    assert [r["image"] for r in report if r["status"] == "rejected"] == ["photos/street.jpg"] * 5 + [
        "photos/square.png",
        None,
        "photos/park_copy.png",
    ]


def shapes(rows):
    return {json.loads(r["extra"])["original_id"]: r for r in rows}


def test_documented_mask_example_decodes_in_place(root):
    """The <mask> from CVAT's XML format page: runs over a 13x15 box at left=707, top=888, background first."""
    rows, _ = import_annotations("cvat_xml", str(XML), str(root))
    car = shapes(rows)["4/0"]
    assert (car["height"], car["width"]) == (1200, 1600)
    assert car["area"] == 149 and car["bbox"] == [707.0, 888.0, 13.0, 15.0]
    mask = rle.decode(car["segmentation"], 1200, 1600)
    assert not mask[888, 707:710].any() and mask[888, 710:715].all() and not mask[888, 715:720].any()  # "3, 5, 7"
    assert mask[895, 707:720].all()  # the 26-pixel run spans rows 7 and 8 of the box


def test_boxes_ellipses_and_masks_land_where_cvat_draws_them(root):
    rows, _ = import_annotations("cvat_xml", str(XML), str(root))
    s = shapes(rows)
    assert s["0/0"]["bbox"] == [10.0, 18.0, 24.0, 14.0]
    straight, rotated = s["0/2"], s["0/1"]  # the polygon covers the box's 10x10 square; the box is rotated 30 deg
    assert straight["bbox"] == [40.0, 5.0, 10.0, 10.0]
    assert rotated["bbox"][2] > 12 and abs(rotated["area"] - 100) < 12
    cx = rotated["bbox"][0] + rotated["bbox"][2] / 2
    assert abs(cx - 45) <= 1  # rotated about its center
    wheel = rle.decode(s["0/6"]["segmentation"], 48, 64)
    assert wheel[40, 22] and abs(wheel.sum() - np.pi * 12) < 10
    bush = rle.decode(s["0/7"]["segmentation"], 48, 64)
    expected = np.zeros((48, 64), bool)
    expected[30:34, 50:54] = [[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]
    assert (bush == expected).all()
    park = s["1/0"]
    poly = mask_utils.merge(mask_utils.frPyObjects([[8, 8, 13, 8, 13, 13, 8, 13]], 30, 40))
    assert park["segmentation"] == poly["counts"].decode()


def test_provenance_from_shape_attributes_and_task_meta(root):
    rows, _ = import_annotations("cvat_xml", str(XML), str(root))
    s = {k: json.loads(r["extra"]) for k, r in shapes(rows).items()}
    car = s["0/0"]
    assert car["label"] == "car" and car["attributes"] == {"color": "red"} and car["cvat_source"] == "manual"
    assert car["annotator"] == "maria" and car["task_owner"] == "lead" and car["task_id"] == "12"
    assert car["time"].startswith("2024-03-04") and car["exported_at"].startswith("2024-03-05")
    assert s["0/2"]["cvat_source"] == "semi-auto" and s["0/6"]["occluded"] == "1" and s["0/1"]["shape"] == "box"


def test_folder_and_zip_exports_read_the_same(root, tmp_path):
    rows, _ = import_annotations("cvat_xml", str(XML), str(root))
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(XML, folder / "annotations.xml")
    archive = tmp_path / "task_12-cvat_for_images_1.1.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(XML, "annotations.xml")
        z.writestr("images/photos/street.jpg", (root / "photos" / "street.jpg").read_bytes())
    for source in (folder, archive):
        again, _ = import_annotations("cvat_xml", str(source), str(root))
        assert [r["segmentation"] for r in again] == [r["segmentation"] for r in rows]


def test_video_export_and_non_xml_fail_clearly(tmp_path):
    video = tmp_path / "video.xml"
    video.write_text('<annotations><version>1.1</version><track id="0" label="car"></track></annotations>')
    with pytest.raises(InputError, match="CVAT for images 1.1"):
        import_annotations("cvat_xml", str(video))
    junk = tmp_path / "junk.xml"
    junk.write_text("<annotations><image")
    with pytest.raises(InputError, match="not a readable CVAT XML"):
        import_annotations("cvat_xml", str(junk))


def test_cvat_coco_export_keeps_its_attributes(root):
    rows, report = import_annotations("cvat_coco", str(DATA / "cvat_coco_instances.json"), str(root))
    assert outcome(report) == [("1", "imported"), ("2", "imported"), ("3", "no segmentation")]
    car, tree = (json.loads(r["extra"]) for r in rows)
    assert car["format"] == "cvat_coco" and car["attributes"] == {"color": "red", "occluded": False, "rotation": 0.0}
    assert tree["iscrowd"] == 1 and tree["attributes"] == {"occluded": True}
    assert rows[1]["area"] == 25 and rows[1]["bbox"] == [8.0, 8.0, 5.0, 5.0]
