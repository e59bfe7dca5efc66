"""LabelMe JSON import: region shapes become masks, the rest is reported; imagePath resolved like LabelMe."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from assisted_data import DATA, copy_fixture, make_images, outcome, statuses
from pycocotools import mask as mask_utils

from data_engine.importers import import_annotations
from data_engine.io import rle
from data_engine.io.inputs import InputError


@pytest.fixture
def dataset(tmp_path):
    """<tmp>/dataset/photos/*.jpg|png next to <tmp>/dataset/labelme/*.json, as LabelMe users keep them."""
    root = make_images(tmp_path / "dataset")
    copy_fixture("labelme", root)
    return root


def by_file(report):
    found = {}
    for r in report:
        found.setdefault(r["file"].rsplit("/", 1)[-1], []).append(
            r["status"] if r["status"] == "imported" else r["reason"].split(":")[0]
        )
    return found


def test_every_shape_is_imported_or_rejected_with_its_reason(dataset):
    rows, report = import_annotations("labelme", str(dataset / "labelme"), str(dataset))
    assert by_file(report) == {
        "broken.json": ["unreadable file"],
        "escape.json": ["path escapes image root"],
        "park.json": ["imported", "imported"],
        "street.json": ["imported", "imported", "imported", "not a region", "not a region", "imported", "imported"],
        "wrong_size.json": ["size mismatch"],
    }
    counts = statuses(report)
    assert counts["imported"] == len(rows) == 7 and counts["imported"] + counts["rejected"] == 12


def street_rows(rows):
    return {json.loads(r["extra"])["label"]: r for r in rows if r["file_name"] == "photos/street.jpg"}


def test_shapes_rasterise_where_labelme_draws_them(dataset):
    rows, report = import_annotations("labelme", str(dataset / "labelme"), str(dataset))
    street = street_rows(rows)
    assert street["sign"]["bbox"] == [40.0, 5.0, 10.0, 10.0] and street["sign"]["area"] == 100  # corners in any order
    polygon = mask_utils.merge(mask_utils.frPyObjects([[10, 20, 30, 18, 34, 30, 12, 32]], 48, 64))
    assert street["car"]["segmentation"] == polygon["counts"].decode()
    wheel = rle.decode(street["wheel"]["segmentation"], 48, 64)  # circle of radius 4 about (20, 40)
    assert wheel[40, 20] and not wheel[40, 26] and abs(wheel.sum() - np.pi * 16) < 12
    bush = rle.decode(street["bush"]["segmentation"], 48, 64)  # the 4x4 PNG placed at its first point (50, 30)
    expected = np.zeros((48, 64), bool)
    expected[30:34, 50:54] = [[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]
    assert (bush == expected).all()
    tree_note = [r["reason"] for r in report if r["file"].endswith("street.json") and r["annotation"] == "shapes[6]"]
    assert tree_note[0].startswith("clipped")


def test_windows_paths_and_labelme3_shapes(dataset):
    rows, _ = import_annotations("labelme", str(dataset / "labelme"), str(dataset))
    park = [r for r in rows if r["file_name"] == "photos/park.png"]
    assert len(park) == 2  # '..\\photos\\park.png' and a shape without shape_type (LabelMe 3: a polygon)
    assert park[0]["bbox"] == [8.0, 8.0, 5.0, 5.0]


def test_provenance_keeps_label_group_description_and_flags(dataset):
    rows, _ = import_annotations("labelme", str(dataset / "labelme"), str(dataset))
    car = json.loads(street_rows(rows)["car"]["extra"])
    assert car["description"] == "parked, partly hidden" and car["flags"] == {"occluded": True}
    assert car["shape_type"] == "polygon" and car["format"] == "labelme" and car["original_id"] == 0
    assert json.loads(street_rows(rows)["wheel"]["extra"])["group_id"] == 1


def test_json_next_to_its_image_needs_no_image_root(tmp_path):
    make_images(tmp_path, {"street.jpg": (64, 48)})
    doc = json.loads((DATA / "labelme" / "street.json").read_text())
    doc["imagePath"] = "street.jpg"
    (tmp_path / "street.json").write_text(json.dumps(doc))
    rows, report = import_annotations("labelme", str(tmp_path / "street.json"))
    assert {r["file_name"] for r in rows} == {"street.jpg"} and len(rows) == 5 and len(report) == 7


def test_image_path_relative_to_root_when_json_moved(tmp_path):
    """JSON files moved into their own folder with imagePath still the bare name: found under image_root."""
    root = make_images(tmp_path / "images", {"street.jpg": (64, 48)})
    (tmp_path / "ann").mkdir()
    doc = json.loads((DATA / "labelme" / "street.json").read_text())
    doc["imagePath"] = "street.jpg"
    (tmp_path / "ann" / "street.json").write_text(json.dumps(doc))
    rows, _ = import_annotations("labelme", str(tmp_path / "ann"), str(root))
    assert {r["file_name"] for r in rows} == {"street.jpg"}


def test_mask_shape_with_wrong_png_size_is_rejected(tmp_path):
    shutil.copy(DATA / "labelme" / "street.json", tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    doc["shapes"] = [dict(doc["shapes"][5], points=[[50, 30], [56, 36]])]  # box 7x7, PNG 4x4
    doc["imagePath"] = "street.jpg"
    (tmp_path / "s.json").write_text(json.dumps(doc))
    _, report = import_annotations("labelme", str(tmp_path / "s.json"))
    assert outcome(report) == [("shapes[0]", "bad mask")]


def test_folder_without_json_fails_clearly(tmp_path):
    with pytest.raises(InputError, match="no \\*.json"):
        import_annotations("labelme", str(tmp_path))
