"""Label Studio JSON export: brush RLE (decoded here from its bit format), polygons, rectangles, ellipses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from assisted_data import DATA, make_images, outcome, statuses
from pycocotools import mask as mask_utils

from data_engine.importers import import_annotations
from data_engine.importers import labelstudio_rle as ls_rle
from data_engine.io import rle
from data_engine.io.inputs import InputError

EXPORT = DATA / "labelstudio_export.json"


@pytest.fixture
def root(tmp_path):
    return make_images(tmp_path / "images")


def bits_to_bytes(bits: str) -> list[int]:
    bits = bits.replace(" ", "")
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def test_decoder_reads_a_hand_built_stream():
    """1x2 RGBA canvas: pixel 0 transparent as a repeat run, pixel 1 red and opaque as a literal run."""
    stream = bits_to_bytes(
        "00000000000000000000000000001000"  # 8 values
        "00111"  # word size 8
        "0010 0011 0111 1111"  # run-length fields of 3, 4, 8, 16 bits
        "1 00 011 00000000"  # repeat, 3-bit length field, 4 values, value 0
        "0 00 011 11111111 00000000 00000000 11111111"  # literal, 4 values: 255 0 0 255
    )
    assert ls_rle.decode(stream).tolist() == [0, 0, 0, 0, 255, 0, 0, 255]
    assert ls_rle.decode_mask(stream, 1, 2).tolist() == [[False, True]]


def test_decoder_uses_the_selected_run_length_field():
    """A 16-bit length field (index 3) carrying a run of 300 values."""
    stream = bits_to_bytes("00000000000000000000000100101100001110010 0011 0111 11111 11 0000000100101011 11111111")
    assert ls_rle.decode(stream).tolist() == [255] * 300


def test_truncated_or_mis_sized_streams_fail():
    stream = ls_rle.encode_mask(np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="stream ends"):
        ls_rle.decode(stream[:-2])
    with pytest.raises(ValueError, match="expected"):
        ls_rle.decode_mask(stream, 4, 4)


def test_encoder_and_decoder_agree():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 13), (48, 64)]:
        mask = rng.random(shape) < 0.4
        assert (ls_rle.decode_mask(ls_rle.encode_mask(mask), *shape) == mask).all()
    long_run = np.zeros(200_000, np.uint8)  # runs longer than a 16-bit field are split
    assert (ls_rle.decode(ls_rle.encode(long_run)) == long_run).all()


def test_every_region_is_imported_or_rejected_with_its_reason(root):
    rows, report = import_annotations("labelstudio", str(EXPORT), str(root))
    assert outcome(report) == [
        ("task 1 annotation 11 result br1", "imported"),
        ("task 1 annotation 11 result pg1", "imported"),
        ("task 1 annotation 11 result rc1", "imported"),
        ("task 1 annotation 11 result rc2", "imported"),
        ("task 1 annotation 11 result el1", "imported"),
        ("task 1 annotation 11 result ch1", "not a region"),
        ("task 1 annotation 11 result #7", "not a region"),
        ("task 1 annotation 11 result kp1", "not a region"),
        ("task 2 annotation 21 result x1", "cancelled"),
        ("task 2 annotation 22 result p2", "imported"),
        ("task 2 annotation 22 result b2", "bad RLE"),
        ("task 3 annotation 31 result s1", "size mismatch"),
        ("task 2 annotation 41 result d1", "duplicate id"),
        ("task 5 annotation 51 result e1", "path escapes image root"),
        ("task 6 annotation 61 result g1", "unknown image"),
        ("task 7 annotation 11 result u1", "duplicate id"),
    ]
    counts = statuses(report)
    assert counts["imported"] == len(rows) == 6 and counts["imported"] + counts["rejected"] == 16
    # a rejected region names its image whenever it is known, the repeated task id's too
    assert [r["image"] for r in report if r["status"] == "rejected"] == [
        "photos/street.jpg",
        "photos/street.jpg",
        "photos/street.jpg",
        "photos/park.png",
        "photos/park.png",
        "photos/square.png",
        "photos/park.png",
        None,
        "deadbeef-ghost.jpg",
        "photos/park.png",
    ]


def regions(rows):
    return {json.loads(r["extra"])["original_id"]: r for r in rows}


def test_geometry_in_percent_lands_on_pixels(root):
    r = regions(import_annotations("labelstudio", str(EXPORT), str(root))[0])
    brush = rle.decode(r["br1"]["segmentation"], 48, 64)
    expected = np.zeros((48, 64), bool)
    expected[30:40, 44:56] = True
    assert (brush == expected).all()
    car = mask_utils.merge(mask_utils.frPyObjects([[10, 20, 30, 18, 34, 30, 12, 32]], 48, 64))
    assert rle.iou_matrix([r["pg1"]["segmentation"]], [car["counts"].decode()], 48, 64)[0, 0] == 1.0
    assert r["rc1"]["bbox"] == [40.0, 5.0, 10.0, 10.0]
    # rc2: 8x6 px at (10, 2) rotated 30 deg clockwise about that top-left corner (corners worked out by hand)
    turned = mask_utils.merge(mask_utils.frPyObjects([[10, 2, 16.9282, 6, 13.9282, 11.1962, 7, 7.1962]], 48, 64))
    assert rle.iou_matrix([r["rc2"]["segmentation"]], [turned["counts"].decode()], 48, 64)[0, 0] > 0.97
    wheel = rle.decode(r["el1"]["segmentation"], 48, 64)  # radii 6.25 % of 64 and of 48 px about (22, 40)
    assert wheel[40, 22] and wheel[40, 25] and not wheel[40, 27] and not wheel[44, 22]
    assert abs(wheel.sum() - np.pi * 4 * 3) < 8


def test_provenance_annotator_time_labels_and_region_attributes(root):
    r = regions(import_annotations("labelstudio", str(EXPORT), str(root))[0])
    car = json.loads(r["pg1"]["extra"])
    assert car["annotator"] == "maria@example.org" and car["seconds"] == 42.5
    assert car["time"] == "2024-03-02T10:01:12.000000Z" and car["label"] == "car" and car["labels"] == ["car"]
    assert car["attributes"] == {"note": {"text": ["parked, partly hidden"]}}
    assert car["task_id"] == 1 and car["annotation_id"] == 11 and car["format"] == "labelstudio"
    assert json.loads(r["p2"]["extra"])["annotator"] == 5  # completed_by as a bare user id


def test_image_references_resolve_uploads_local_files_and_urls(root, tmp_path):
    rows, _ = import_annotations("labelstudio", str(EXPORT), str(root))
    assert {r["file_name"] for r in rows} == {"photos/street.jpg", "photos/park.png"}  # upload prefix dropped
    make_images(root, {"elsewhere/street.jpg": (64, 48)})  # now two files answer to 'street.jpg'
    _, report = import_annotations("labelstudio", str(EXPORT), str(root))
    assert report[0]["reason"].startswith("ambiguous image")
    task = {
        "id": 1,
        "data": {"img": "https://cdn.example.org/photos/park.png?sig=1"},
        "annotations": [
            {
                "id": 1,
                "result": [
                    {
                        "id": "a",
                        "type": "rectanglelabels",
                        "original_width": 40,
                        "original_height": 30,
                        "value": {"x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["x"]},
                    }
                ],
            }
        ],
    }
    (tmp_path / "url.json").write_text(json.dumps([task]))
    rows, _ = import_annotations("labelstudio", str(tmp_path / "url.json"))
    assert rows[0]["file_name"] == "park.png" and rows[0]["bbox"] == [0.0, 0.0, 20.0, 15.0]


def test_local_files_under_a_document_root_above_the_image_root(root, tmp_path):
    """Label Studio serves local files only from a storage below its document root, so a task names the
    image with the image root's own folder in front: ?d=images/photos/park.png under the root images/."""
    make_images(root, {"elsewhere/park.png": (40, 30)})  # the base name alone would be ambiguous
    task = {
        "id": 1,
        "data": {"image": "/data/local-files/?d=images/photos/park.png"},
        "annotations": [{"id": 1, "result": [rectangle("a")]}],
    }
    (tmp_path / "export.json").write_text(json.dumps([task]))
    rows, report = import_annotations("labelstudio", str(tmp_path / "export.json"), str(root))
    assert [r["file_name"] for r in rows] == ["photos/park.png"] and report[0]["status"] == "imported"


def rectangle(region_id: str) -> dict:
    return {
        "id": region_id,
        "type": "rectanglelabels",
        "original_width": 40,
        "original_height": 30,
        "value": {"x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["x"]},
    }


@pytest.mark.parametrize("doc", [{"tasks": []}, [{"image": "a.jpg", "label": ["x"], "id": 1}]])
def test_not_a_full_json_export_fails_clearly(tmp_path, doc):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="not a Label Studio JSON export"):
        import_annotations("labelstudio", str(path))
