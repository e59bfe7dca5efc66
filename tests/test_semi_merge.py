"""Stage 2's human pass: pre-annotation exports read back by the importers (and pycocotools), the merge's
counts on a constructed case in every format, the simulated annotator's round trip, and annotator files
that do not match the prefill run."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from semi_data import OracleDetector, make_detector_file, make_scenes, semi_cfg

from data_engine.config import compose, validate
from data_engine.errors import ConfigError
from data_engine.importers import import_annotations
from data_engine.importers import labelstudio_rle as ls_rle
from data_engine.io import rle
from data_engine.io.dataset import Dataset, mask_row, read_images, read_masks, write_shard
from data_engine.io.inputs import image_id
from data_engine.runtime import runs
from data_engine.semi import merge, prefill
from data_engine.semi.annotator import annotate, review
from data_engine.semi.preannotations import FILES, WRITERS
from data_engine.stages import run_stage

IMPORT_FORMAT = {"labelstudio": "labelstudio", "cvat_xml": "cvat_xml", "coco": "coco"}


@pytest.fixture(scope="module")
def prefilled(tmp_path_factory):
    """A prefill run on 3 scenes with the exact boxes as detections (stand-in detector)."""
    root = tmp_path_factory.mktemp("semi_merge")
    scenes = make_scenes(root / "synth")
    detector = make_detector_file(root / "model.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prefill, "detect", OracleDetector(scenes))
        run_stage(semi_cfg(scenes / "pictures", detector, root / "semi"))
    return scenes, root / "semi"


def merge_cfg(prefill_dir: Path, fmt: str, annotations: Path, out: Path, *overrides) -> dict:
    return compose(
        [
            "stage=semi_merge",
            f"semi_merge.prefill={prefill_dir}",
            f"semi_merge.format={fmt}",
            f"semi_merge.annotations={annotations}",
            f"output.dir={out}",
            "runtime=serial",
            "runtime.progress=false",
            "output.overlays=0",
            *overrides,
        ]
    )


def accept_all(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports after an annotator submits each task's prediction unchanged."""
    return [{**t, "annotations": [{"id": t["id"], "result": t["predictions"][0]["result"]}]} for t in tasks]


# Exports


def test_labelstudio_brush_encoder_round_trips_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (40, 33)]:
        mask = rng.random(shape) > 0.6
        assert (ls_rle.decode_mask(ls_rle.encode_mask(mask), *shape) == mask).all()


@pytest.mark.parametrize("fmt", ["labelstudio", "cvat_xml", "coco"])
def test_each_export_reads_back_with_the_importers_as_the_same_masks(prefilled, fmt, tmp_path):
    scenes, semi = prefilled
    path = semi / "preannotations" / FILES[fmt]
    if fmt == "labelstudio":
        accepted = tmp_path / "accepted.json"
        accepted.write_text(json.dumps(accept_all(json.loads(path.read_text()))))
        path = accepted
    rows, report = import_annotations(IMPORT_FORMAT[fmt], str(path), str(scenes / "pictures"))
    assert all(r["status"] == "imported" for r in report)
    got = sorted((r["file_name"], r["segmentation"]) for r in rows)
    expected = sorted((r["file_name"], r["segmentation"]) for r in read_masks(semi).to_pylist())
    assert got == expected and len(got) > 0


def test_coco_export_opens_in_pycocotools_with_every_image(prefilled):
    _, semi = prefilled
    api = COCO(str(semi / "preannotations" / "coco_instances.json"))
    masks = read_masks(semi).to_pylist()
    assert len(api.getImgIds()) == len(read_images(semi)) and len(api.getAnnIds()) == len(masks)
    for ann in api.loadAnns(api.getAnnIds()):
        img = api.loadImgs(ann["image_id"])[0]
        mask = api.annToMask(ann).astype(bool)
        assert mask.sum() == ann["area"] and mask.shape == (img["height"], img["width"])


def test_cvat_masks_run_lengths_cover_their_box(prefilled):
    import xml.etree.ElementTree as ET

    _, semi = prefilled
    root = ET.parse(semi / "preannotations" / "cvat_annotations.xml").getroot()
    assert root.find("meta/task/labels/label/name").text == "object"
    for node in root.iter("mask"):
        runs_ = [int(v) for v in node.get("rle").split(",")]
        assert sum(runs_) == int(node.get("width")) * int(node.get("height")) and node.get("source") == "semi-auto"


# Merge: a constructed case


def constructed_prefill(out: Path, height=48, width=64) -> tuple[dict, list[np.ndarray]]:
    """A prefill output of one image holding three masks A, B, C (as stage=semi writes it)."""
    cfg = compose(["stage=semi", f"output.dir={out}", "runtime=serial"])
    runs.prepare_output(out, cfg, {"input_root": None})
    masks = [np.zeros((height, width), bool) for _ in range(3)]
    masks[0][5:20, 5:20] = True  # A: kept
    masks[1][25:45, 30:60] = True  # B: edited
    masks[2][2:12, 40:60] = True  # C: deleted
    image = {"image_id": image_id("pic.png"), "file_name": "pic.png", "height": height, "width": width}
    rows = [
        {
            **dict.fromkeys(("mask_id", "predicted_iou")),
            **image,
            "segmentation": c,
            "area": int(m.sum()),
            "bbox": rle.bbox([c], height, width)[0].tolist(),
            "stage": "semi",
            "source": "prefill",
            "model": "tiny",
            "extra": json.dumps({"detector_box": [0, 0, 1, 1], "detector_score": 0.9}),
        }
        for m, c in zip(masks, rle.encode(np.stack(masks)))
    ]
    write_shard(
        out, "shard-000000000", rows, [{**image, "status": "ok", "error": None, "num_masks": 3, "seconds": 0.1}]
    )
    runs.mark_done(out, "shard-000000000", {})
    return image, masks


def annotator_rows(image: dict, masks: list[np.ndarray]) -> list[dict]:
    return [mask_row(image, c, stage="semi", source="annotator") for c in rle.encode(np.stack(masks))]


@pytest.mark.parametrize("fmt", ["labelstudio", "cvat_xml", "coco"])
def test_merge_counts_one_kept_one_edited_one_deleted_one_added(fmt, tmp_path):
    image, (a, b, c) = constructed_prefill(tmp_path / "semi")
    edited = b.copy()
    edited[25:45, 55:60] = False  # B trimmed: IoU 25/30
    added = np.zeros_like(a)
    added[30:40, 2:12] = True
    path = tmp_path / FILES[fmt]
    WRITERS[fmt]([image], {"pic.png": annotator_rows(image, [a, edited, added])}, path, kind="annotations")
    summary = run_stage(merge_cfg(tmp_path / "semi", IMPORT_FORMAT[fmt], path, tmp_path / "merged"))
    assert {k: summary["merge"][k] for k in merge.COUNTS} == {
        "prefilled": 3,
        "shown": 3,
        "kept": 1,
        "edited": 1,
        "deleted": 1,
        "added": 1,
        "accepted": 0,
        "accepted_replaced": 0,
        "masks_before": 3,
        "masks_after": 3,
    }
    rows = {r["source"]: r for r in read_masks(tmp_path / "merged").to_pylist()}
    assert sorted(rows) == ["annotator", "prefill_edited", "prefill_kept"]
    assert all(r["stage"] == "semi" for r in rows.values())
    assert (rle.decode(rows["prefill_edited"]["segmentation"], 48, 64) == edited).all()
    edit_extra = json.loads(rows["prefill_edited"]["extra"])
    assert edit_extra["iou_with_prefill"] == pytest.approx(25 / 30) and edit_extra["detector_score"] == 0.9
    assert json.loads(rows["prefill_kept"]["extra"])["annotation"]["format"] == IMPORT_FORMAT[fmt]
    per_image = read_parquet_rows(tmp_path / "merged" / "merge")
    assert per_image == [
        {
            "image_id": image["image_id"],
            "file_name": "pic.png",
            "status": "ok",
            **{k: summary["merge"][k] for k in merge.COUNTS},
        }
    ]


def read_parquet_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for p in sorted(folder.rglob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_edit_iou_decides_edited_or_deleted_plus_added(tmp_path):
    image, (a, b, c) = constructed_prefill(tmp_path / "semi")
    edited = b.copy()
    edited[25:45, 55:60] = False  # IoU 0.833
    path = tmp_path / "result.json"
    WRITERS["coco"]([image], {"pic.png": annotator_rows(image, [edited])}, path, kind="annotations")
    summary = run_stage(merge_cfg(tmp_path / "semi", "coco", path, tmp_path / "m", "semi_merge.edit_iou=0.9"))
    assert (summary["merge"]["edited"], summary["merge"]["deleted"], summary["merge"]["added"]) == (0, 3, 1)


def test_match_prefers_identical_masks_then_the_best_overlap():
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 2:10, 2:11] = True  # nearly the same as 0
    masks[2, 12:18, 12:18] = True
    p = rle.encode(masks)
    d = rle.encode(masks[[1, 0]])  # the annotator's copies, in another order
    found = merge.match(p, d, 20, 20, edit_iou=0.5)
    assert found == {"kept": [(0, 1), (1, 0)], "edited": [], "added": [], "deleted": [2]}


# Simulated annotator round trip


def test_simulated_annotator_round_trip_gives_the_merge_summary(prefilled, tmp_path):
    scenes, semi = prefilled
    result = tmp_path / "annotator.json"
    counts = annotate(semi / "preannotations" / "coco_instances.json", scenes / "instances.json", result)
    summary = run_stage(merge_cfg(semi, "coco", result, tmp_path / "merged"))
    m = summary["merge"]
    # A deleted prefill whose object the annotator redrew (IoU >= edit_iou) reads as an edit
    assert m["kept"] == counts["kept"]
    assert (m["edited"] + m["added"], m["edited"] + m["deleted"]) == (counts["drawn"], counts["deleted"])
    # Only identical masks pair up at edit_iou=1: the annotator's own counts
    exact = run_stage(merge_cfg(semi, "coco", result, tmp_path / "exact", "semi_merge.edit_iou=1.0"))["merge"]
    assert (exact["kept"], exact["edited"], exact["deleted"], exact["added"]) == (
        counts["kept"],
        0,
        counts["deleted"],
        counts["drawn"],
    )
    assert m["prefilled"] == counts["prefilled"] == len(read_masks(semi))
    assert m["masks_after"] == counts["expert"] and counts["kept"] > 0 and counts["deleted"] + counts["drawn"] > 0
    # The merged dataset holds every expert mask: kept ones at IoU >= 0.75, drawn ones exactly
    expert = json.loads((scenes / "instances.json").read_text())
    merged = read_masks(tmp_path / "merged").to_pylist()
    names = {img["id"]: img for img in expert["images"]}
    for img in names.values():
        mine = [r["segmentation"] for r in merged if r["file_name"] == img["file_name"]]
        truth = [a["segmentation"]["counts"] for a in expert["annotations"] if a["image_id"] == img["id"]]
        iou = rle.iou_matrix(truth, mine, img["height"], img["width"])
        assert (iou.max(axis=1) >= 0.75).all()


def test_simulated_annotator_fix_below_edits_and_min_area_skips():
    truth = np.zeros((2, 30, 30), bool)
    truth[0, 0:10, 0:10] = True
    truth[1, 20:22, 20:22] = True  # 4 px
    pre = truth[:1].copy()
    pre[0, 0:10, 10:11] = True  # IoU 100/110
    decided = review(rle.encode(pre), rle.encode(truth), 30, 30, keep_iou=0.75, fix_below=0.95, min_area=5)
    assert decided["fixed"] == [(0, 0, pytest.approx(100 / 110))] and decided["kept"] == []
    assert decided["drawn"] == [] and decided["deleted"] == []


# Annotator files that do not match the exported tasks


def test_annotations_of_unknown_or_resized_images_are_counted_not_dropped(prefilled, tmp_path):
    scenes, semi = prefilled
    images, masks = Dataset.open(semi).by_image()
    good = images[0]
    # An image the prefill run never saw (present in the folder), and a known image declared at another size
    stranger = {**good, "file_name": "stranger.png", "image_id": image_id("stranger.png")}
    cv2.imwrite(str(tmp_path / "stranger.png"), np.zeros((good["height"], good["width"], 3), np.uint8))
    resized = {**images[1], "height": images[1]["height"] + 1}
    blob = np.zeros((good["height"], good["width"]), bool)
    blob[4:12, 4:12] = True
    doc_masks = {
        good["file_name"]: masks.get(good["file_name"], []),
        "stranger.png": annotator_rows(stranger, [blob]),
        resized["file_name"]: annotator_rows(resized, [np.pad(blob, ((0, 1), (0, 0)))]),
    }
    path = tmp_path / "result.json"
    WRITERS["coco"]([good, stranger, resized], doc_masks, path, kind="annotations")
    root = tmp_path / "root"
    root.mkdir()
    for img in images:
        (root / img["file_name"]).symlink_to(scenes / "pictures" / img["file_name"])
    (root / "stranger.png").symlink_to(tmp_path / "stranger.png")
    root_args = [f"semi_merge.image_root={root}", "input.follow_symlinks=true"]  # its images link out of it
    summary = run_stage(merge_cfg(semi, "coco", path, tmp_path / "merged", *root_args))
    total = sum(len(v) for v in doc_masks.values())
    assert summary["import"]["input_annotations"] == total
    assert summary["import"]["rejected_by_reason"] == {"size mismatch": 1, "unknown image": 1}
    assert summary["merge"]["kept"] == len(masks.get(good["file_name"], []))
    import pyarrow.parquet as pq

    report = pq.read_table(tmp_path / "merged" / "import_report.parquet").to_pylist()
    assert len(report) == total and {r["image"] for r in report if r["status"] == "rejected"} == {
        "stranger.png",
        resized["file_name"],
    }


def test_merge_settings_name_the_key(prefilled, tmp_path):
    _, semi = prefilled
    path = semi / "preannotations" / "coco_instances.json"
    with pytest.raises(ConfigError, match="semi_merge.edit_iou"):
        validate(merge_cfg(semi, "coco", path, tmp_path / "m", "semi_merge.edit_iou=0"))
    with pytest.raises(ConfigError, match="semi_merge.prefill"):
        validate(merge_cfg(tmp_path, "coco", path, tmp_path / "m"))
    with pytest.raises(ConfigError, match="semi_merge.format"):
        validate(merge_cfg(semi, "pdf", path, tmp_path / "m"))


def test_merge_rerun_skips_done_shards_and_refuses_another_export(tmp_path):
    image, (a, b, c) = constructed_prefill(tmp_path / "semi")
    path = tmp_path / "result.json"
    WRITERS["coco"]([image], {"pic.png": annotator_rows(image, [a])}, path, kind="annotations")
    cfg = merge_cfg(tmp_path / "semi", "coco", path, tmp_path / "m")
    first = run_stage(cfg)
    stamp = (tmp_path / "m" / "masks" / "000000" / "shard-000000000.parquet").stat().st_mtime_ns
    again = run_stage(cfg)
    assert again["merge"] == first["merge"] and again["merge"]["kept"] == 1
    assert (tmp_path / "m" / "masks" / "000000" / "shard-000000000.parquet").stat().st_mtime_ns == stamp
    WRITERS["coco"]([image], {"pic.png": annotator_rows(image, [a, b])}, path, kind="annotations")
    with pytest.raises(runs.OutputConflict):
        run_stage(cfg)
