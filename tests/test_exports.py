"""Exports round-trip: export a dataset, read it back (SA-1B reader, stage-1 importers), same masks."""

import json

import cv2
import numpy as np
import pytest
from maskdata import rect, write_dataset

from data_engine.config import validate
from data_engine.errors import ConfigError
from data_engine.exports.formats import ExportError, export, label_layers, read_sa1b
from data_engine.io import rle
from data_engine.io.dataset import read_masks
from data_engine.stages import run_stage

H, W = 64, 80


@pytest.fixture
def dataset(tmp_path):
    """Two images in a sub-folder and one empty image; the first has nested (overlapping) masks."""
    images = {
        "sub/a.png": [
            rect(H, W, 0, 0, 40, 40),
            rect(H, W, 10, 10, 20, 20),
            rect(H, W, 5, 5, 30, 30),
            rect(H, W, 50, 60, 60, 80),
        ],
        "b.jpg": [rect(H, W, 30, 30, 50, 70)],
        "empty.png": [],
    }
    return write_dataset(tmp_path / "ds", images, (H, W)), images


def mask_set(rows) -> dict:
    """{file_name: sorted RLE counts} (order-free comparison of masks)."""
    out = {}
    for r in rows:
        out.setdefault(r["file_name"], []).append(r["segmentation"])
    return {k: sorted(v) for k, v in out.items()}


def expected(images: dict) -> dict:
    return {name: sorted(rle.encode(np.stack(ms))) for name, ms in images.items() if ms}


def test_sa1b_round_trip_keeps_masks_and_fields(dataset, tmp_path):
    ds, images = dataset
    summary = export(ds, tmp_path / "out", "sa1b")
    assert (summary["images"], summary["masks"], summary["files"]) == (3, 5, 3)
    doc = json.loads((tmp_path / "out" / "sa1b" / "sub" / "a.json").read_text())
    assert set(doc) == {"image", "annotations"}
    assert set(doc["image"]) == {"image_id", "width", "height", "file_name"}
    assert set(doc["annotations"][0]) == {
        "id",
        "segmentation",
        "bbox",
        "area",
        "predicted_iou",
        "stability_score",
        "crop_box",
        "point_coords",
        "parent_mask_id",  # the hierarchy's two extra keys
        "depth",
    }
    image_rows, rows = read_sa1b(tmp_path / "out" / "sa1b")
    assert mask_set(rows) == expected(images)
    assert sorted(r["file_name"] for r in image_rows) == sorted(images)
    ids = [r["mask_id"] for r in rows]
    assert len(set(ids)) == len(ids)  # annotation ids unique across the export
    assert sorted(ids) == sorted(read_masks(ds, ["mask_id"]).column("mask_id").to_pylist())  # = the dataset's
    a = sorted((r for r in rows if r["file_name"] == "sub/a.png"), key=lambda r: r["area"])[0]
    assert a["area"] == 100 and a["bbox"] == [10.0, 10.0, 10.0, 10.0] and a["predicted_iou"] == pytest.approx(0.9)


def test_coco_round_trip_through_the_importer(dataset, tmp_path):
    from data_engine.importers import import_annotations

    ds, images = dataset
    export(ds, tmp_path / "out", "coco")
    path = tmp_path / "out" / "coco" / "instances.json"
    doc = json.loads(path.read_text())
    assert doc["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert len(doc["images"]) == 3 and len(doc["annotations"]) == 5
    rows, report = import_annotations("coco", path)
    assert mask_set(rows) == expected(images)
    assert all(r["status"] == "imported" for r in report)


def test_png_layers_hold_overlapping_masks_exactly(dataset, tmp_path):
    ds, images = dataset
    summary = export(ds, tmp_path / "out", "png")
    assert summary["layers"] == 3  # a.png: big square, then the nested 25 px square, then the 10 px one
    root = tmp_path / "out" / "png"
    by_image = {}
    for path in sorted(root.rglob("*.png")):
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (H, W)
        name = path.relative_to(root).as_posix().split("/", 1)[1]  # layerN/<name>
        by_image.setdefault(name, []).extend(rle.encode((labels == v)[None])[0] for v in range(1, labels.max() + 1))
    assert {k: sorted(v) for k, v in by_image.items() if v} == {
        n.rsplit(".", 1)[0] + ".png": v for n, v in expected(images).items()
    }
    assert (tmp_path / "out" / "png" / "layer0" / "empty.png").exists()


def test_png_round_trip_through_the_importer(dataset, tmp_path):
    from data_engine.importers import import_annotations

    ds, images = dataset
    export(ds, tmp_path / "out", "png")
    rows = []
    for layer in sorted((tmp_path / "out" / "png").iterdir()):
        rows += import_annotations("png_labels", layer)[0]
    got = mask_set(rows)
    assert {k.rsplit(".", 1)[0]: v for k, v in got.items()} == {
        k.rsplit(".", 1)[0]: v for k, v in expected(images).items()
    }


def test_label_layers_first_fit():
    a, b, c = rect(10, 10, 0, 0, 6, 6), rect(10, 10, 2, 2, 4, 4), rect(10, 10, 7, 7, 10, 10)
    layers = label_layers([a, b, c], 10, 10)
    assert len(layers) == 2
    assert layers[0][0, 0] == 1 and layers[0][8, 8] == 2 and layers[1][3, 3] == 1


def test_names_differing_only_in_extension_are_refused(tmp_path):
    ds = write_dataset(tmp_path / "ds", {"a.png": [rect(H, W, 0, 0, 5, 5)], "a.jpg": [rect(H, W, 0, 0, 5, 5)]}, (H, W))
    with pytest.raises(ExportError, match="rename one"):
        export(ds, tmp_path / "out", "sa1b")


def test_export_stage_from_the_real_config(dataset, make_cfg, tmp_path):
    ds, _ = dataset
    cfg = make_cfg("stage=export", "export.format=coco", f"export.dataset={ds}")
    validate(cfg)
    summary = run_stage(cfg)
    assert summary["masks"] == 5 and (tmp_path / "out" / "coco" / "instances.json").is_file()
    with pytest.raises(ConfigError, match="export.dataset"):
        validate(make_cfg("stage=export", f"export.dataset={tmp_path / 'missing'}"))
    with pytest.raises(ConfigError, match="export.format: must be one of"):
        validate(make_cfg("stage=export", "export.format=tiff", f"export.dataset={ds}"))


def test_png_above_255_masks_is_16_bit_and_round_trips(tmp_path):
    from data_engine.importers import import_annotations

    cells = [rect(40, 40, 2 * (i // 20), 2 * (i % 20), 2 * (i // 20) + 2, 2 * (i % 20) + 2) for i in range(300)]
    ds = write_dataset(tmp_path / "ds", {"many.png": cells}, (40, 40))
    assert export(ds, tmp_path / "out", "png")["layers"] == 1
    labels = cv2.imread(str(tmp_path / "out" / "png" / "layer0" / "many.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.max() == 300
    rows, _ = import_annotations("png_labels", tmp_path / "out" / "png" / "layer0")
    assert sorted(r["segmentation"] for r in rows) == sorted(rle.encode(np.stack(cells)))
