"""COCO instances import: every annotation reported, masks identical to pycocotools, COCO round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from assisted_data import DATA, make_images, outcome, statuses
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from data_engine.importers import FORMATS, import_annotations
from data_engine.importers.coco import export
from data_engine.io import inputs, rle
from data_engine.io.dataset import MASK_SCHEMA, table
from data_engine.io.inputs import InputError
from data_engine.io.rle import parse_counts

COCO_FILE = DATA / "coco_instances.json"


@pytest.fixture
def root(tmp_path):
    return make_images(tmp_path / "images")


def test_every_annotation_is_imported_or_rejected_with_its_reason(root):
    rows, report = import_annotations("coco", str(COCO_FILE), str(root))
    assert outcome(report) == [
        ("101", "imported"),
        ("102", "imported"),
        ("103", "imported"),
        ("104", "imported"),
        ("105", "imported"),
        ("106", "degenerate polygon"),
        ("104", "duplicate id"),
        ("107", "unknown image"),
        ("108", "no segmentation"),
        ("109", "size mismatch"),
        ("110", "path escapes image root"),
        ("111", "unknown image"),
        ("112", "outside image"),
        ("113", "imported"),
        ("114", "path escapes image root"),
    ]
    counts = statuses(report)
    assert counts["imported"] == len(rows) == 6
    assert counts["imported"] + counts["rejected"] == len(json.loads(COCO_FILE.read_text())["annotations"])
    # each row names its image wherever the image entry is usable, whatever the reason (the repeated
    # id 104 included); not for an unknown image id, nor a name outside the image root
    assert [r["image"] for r in report] == [
        "photos/street.jpg",
        "photos/street.jpg",
        "photos/street.jpg",
        "photos/park.png",
        "photos/park.png",
        "photos/park.png",
        "photos/street.jpg",
        None,
        "photos/street.jpg",
        "photos/square.png",
        None,
        "photos/missing.jpg",
        "photos/park.png",
        "photos/street.jpg",
        None,
    ]


def test_without_image_root_declared_sizes_are_trusted_but_escapes_still_rejected():
    rows, report = import_annotations("coco", str(COCO_FILE))
    result = dict(outcome(report)[7:])  # after the duplicate, keys are unique
    assert result["109"] == result["111"] == "imported"
    assert result["110"] == result["114"] == "path escapes image root"
    assert {r["file_name"] for r in rows} >= {"photos/square.png", "photos/missing.jpg"}


def test_round_trip_masks_identical_to_pycocotools(root, tmp_path):
    rows, _ = import_annotations("coco", str(COCO_FILE), str(root))
    exported = tmp_path / "export" / "instances.json"
    assert export(rows, exported) == {"images": 2, "annotations": 6}
    original, again = COCO(str(COCO_FILE)), COCO(str(exported))
    raw = {a["id"]: a for a in json.loads(COCO_FILE.read_text())["annotations"][:6]}  # before the duplicate
    raw[113] = json.loads(COCO_FILE.read_text())["annotations"][13]
    for ann in again.dataset["annotations"]:
        source_id = json.loads(rows[ann["id"] - 1]["extra"])["original_id"]
        theirs = original.annToMask(raw[source_id]).astype(bool)
        ours = again.annToMask(ann).astype(bool)
        assert ours.shape == theirs.shape
        assert (ours == theirs).all(), f"annotation {source_id} differs"
        assert (ours & theirs).sum() / (ours | theirs).sum() == 1.0
    # and the exported file imports back to the same masks
    back, report = import_annotations("coco", str(exported), str(root))
    assert all(r["status"] == "imported" for r in report)
    assert [r["segmentation"] for r in back] == [r["segmentation"] for r in rows]


def test_rows_follow_the_mask_schema_with_provenance(root):
    rows, _ = import_annotations("coco", str(COCO_FILE), str(root))
    table(rows, MASK_SCHEMA)  # every row fits the Parquet schema
    by_id = {json.loads(r["extra"])["original_id"]: r for r in rows}
    car = by_id[101]
    assert car["image_id"] == inputs.image_id("photos/street.jpg") and (car["height"], car["width"]) == (48, 64)
    assert car["stage"] == "assisted" and car["source"] == "human" and car["model"] is None
    assert car["predicted_iou"] is None and car["stability_score"] is None and car["crop_box"] is None
    extra = json.loads(car["extra"])
    assert extra["annotator"] == "maria" and extra["time"] == "2024-03-02T09:15:00Z"
    assert extra["label"] == "car" and extra["iscrowd"] == 0 and extra["format"] == "coco"
    crowd = by_id[103]
    assert json.loads(crowd["extra"])["iscrowd"] == 1 and json.loads(crowd["extra"])["label"] == "people"
    assert crowd["area"] == 100 and crowd["bbox"] == [10.0, 20.0, 10.0, 10.0]  # the hand-written run lengths
    assert by_id[104]["area"] == 128 and by_id[104]["bbox"] == [22.0, 8.0, 12.0, 12.0]
    for r in rows:
        rle_dict = rle.to_rle(r["segmentation"], r["height"], r["width"])
        assert r["area"] == mask_utils.area(rle_dict)
        assert r["bbox"] == mask_utils.toBbox(rle_dict).tolist()


def test_clipping_and_dropped_parts_are_noted(root):
    _, report = import_annotations("coco", str(COCO_FILE), str(root))
    notes = {r["annotation"]: r["reason"] for r in report if r["status"] == "imported"}
    assert notes["105"].startswith("clipped")
    assert notes["113"].startswith("degenerate part dropped")
    assert notes["101"] is None


def test_cvat_coco_is_a_registered_format():
    assert FORMATS["cvat_coco"] is not FORMATS["coco"]
    rows, report = import_annotations("cvat_coco", str(DATA / "cvat_coco_instances.json"))
    assert {r["format"] for r in report} == {"cvat_coco"}


def write_coco(path, annotations, size=(10, 10), name="a.png"):
    doc = {
        "images": [{"id": 1, "file_name": name, "height": size[0], "width": size[1]}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    path.write_text(json.dumps(doc))
    return path


def test_size_is_checked_after_exif_orientation(tmp_path):
    """A phone photo stored 64x48 with EXIF 'rotate 90': the pipeline sees it 48 wide, 64 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg", exif=exif)
    anns = [{"id": 1, "image_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}]
    _, report = import_annotations("coco", str(write_coco(tmp_path / "c.json", anns, (48, 64), "a.jpg")), str(tmp_path))
    assert report[0]["reason"] == (
        "size mismatch: annotation says 64x48, image is 48x64 after EXIF orientation (stored 64x48)"
    )
    rows, _ = import_annotations("coco", str(write_coco(tmp_path / "c.json", anns, (64, 48), "a.jpg")), str(tmp_path))
    assert (rows[0]["height"], rows[0]["width"]) == (64, 48)


def test_corrupt_rle_is_rejected_with_a_reason(tmp_path):
    good = mask_utils.encode(np.asfortranarray(np.ones((10, 10, 1), np.uint8)))[0]["counts"].decode()
    anns = [
        {"id": 1, "image_id": 1, "segmentation": {"size": [10, 10], "counts": [10, 5]}},
        {"id": 2, "image_id": 1, "segmentation": {"size": [12, 10], "counts": good}},
        {"id": 3, "image_id": 1, "segmentation": {"size": [10, 10], "counts": "\x7f\x7f"}},
        {"id": 4, "image_id": 1, "segmentation": {"size": [10, 10], "counts": good + "1"}},
        {"id": 5, "image_id": 1, "segmentation": {"size": [10, 10], "counts": [100]}},
        {"id": 6, "image_id": 1, "segmentation": [[0, 0, 5, float("nan"), 5, 5]]},
    ]
    _, report = import_annotations("coco", str(write_coco(tmp_path / "c.json", anns)))
    assert outcome(report) == [
        ("1", "bad RLE"),
        ("2", "size mismatch"),
        ("3", "bad RLE"),
        ("4", "bad RLE"),
        ("5", "empty mask"),
        ("6", "degenerate polygon"),
    ]


def test_parse_counts_matches_pycocotools_runs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 30, size=2)
        mask = rng.random((h, w)) < rng.random()
        encoded = mask_utils.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]["counts"].decode()
        runs = parse_counts(encoded)
        assert sum(runs) == h * w
        flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
        assert (flat.reshape(w, h).T == mask).all()


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a readable JSON"),
        ('{"images": []}', "needs 'images' and 'annotations'"),
    ],
)
def test_unusable_files_fail_with_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        import_annotations("coco", str(path))


def test_unknown_format_and_missing_path_fail_clearly(tmp_path):
    with pytest.raises(InputError, match="choose one of"):
        import_annotations("yolo", str(COCO_FILE))
    with pytest.raises(InputError, match="do not exist"):
        import_annotations("coco", str(tmp_path / "nope.json"))
    with pytest.raises(InputError, match="image_root"):
        import_annotations("coco", str(COCO_FILE), str(tmp_path / "no_such_folder"))
