"""stage=assisted end to end: import report, masks/ and images/ Parquet, click replay in workers, resume."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from assisted_data import DATA, copy_fixture, make_images

from data_engine.errors import ConfigError
from data_engine.io.dataset import read_images, read_masks
from data_engine.model import build as models
from data_engine.runtime.runs import OutputConflict
from data_engine.stages import run_stage


@pytest.fixture
def root(tmp_path):
    return make_images(tmp_path / "images")


def assisted(make_cfg, root, *overrides):
    return make_cfg("stage=assisted", f"assisted.image_root={root}", "input.shard_size=1", *overrides)


def test_coco_import_writes_masks_images_and_a_complete_report(make_cfg, root):
    cfg = assisted(make_cfg, root, "assisted.format=coco", f"assisted.annotations={DATA / 'coco_instances.json'}")
    summary = run_stage(cfg)
    assert summary["import"]["input_annotations"] == 15
    assert summary["import"]["imported"] == 6 and summary["import"]["rejected"] == 9
    assert summary["import"]["rejected_by_reason"] == {
        "degenerate polygon": 1,
        "duplicate id": 1,
        "no segmentation": 1,
        "outside image": 1,
        "path escapes image root": 2,
        "size mismatch": 1,
        "unknown image": 2,
    }
    assert summary["import"]["imported_with_notes"] == {"clipped": 1, "degenerate part dropped": 1}
    assert summary["images"] == summary["images_ok"] == 2 and summary["masks"] == 6 and summary["shards"] == 2
    out = cfg["output"]["dir"]
    report = pq.read_table(f"{out}/import_report.parquet").to_pylist()
    assert len(report) == 15 and {r["format"] for r in report} == {"coco"}
    masks = read_masks(out).to_pylist()
    assert len(masks) == 6 and {m["stage"] for m in masks} == {"assisted"} and {m["source"] for m in masks} == {"human"}
    assert {r["file_name"]: r["num_masks"] for r in read_images(out).to_pylist()} == {
        "photos/park.png": 2,
        "photos/street.jpg": 4,
    }
    assert json.loads((root.parent / "out" / "summary.json").read_text())["import"]["imported"] == 6


def test_clicks_are_replayed_once_per_image_next_to_human_masks(make_cfg, root, tmp_path, monkeypatch):
    encoder_calls, built = [], []
    real_build = models.build_sam

    def counting_build(*args, **kwargs):
        sam = real_build(*args, **kwargs)
        sam.image_encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
        built.append(sam)
        return sam

    monkeypatch.setattr(models, "build_sam", counting_build)
    labelme = copy_fixture("labelme", root)
    cfg = assisted(
        make_cfg,
        root,
        "assisted.format=labelme",
        f"assisted.annotations={labelme}",
        f"assisted.clicks={DATA / 'clicks.json'}",
    )
    summary = run_stage(cfg)
    assert len(built) == 1 and len(encoder_calls) == 2  # street and park have click objects
    assert summary["import"]["input_annotations"] == 12 + 9
    masks = read_masks(cfg["output"]["dir"]).to_pylist()
    replayed = [m for m in masks if m["source"] == "click"]
    assert len(replayed) == 4 and len(masks) == 7 + 4
    assert {m["model"] for m in replayed} == {"tiny"}
    sign = next(m for m in replayed if json.loads(m["extra"])["original_id"] == "sign-1")
    assert sign["segmentation"] == "Ul1:V10000000000000000000000000000000000000k5"  # the annotator's final mask
    assert len(json.loads(sign["extra"])["iou_per_click"]) == 1 and sign["point_coords"] == [[45.5, 10.0]]
    report = pq.read_table(f"{cfg['output']['dir']}/import_report.parquet").to_pylist()
    assert sum(r["format"] == "clicks" for r in report) == 9


def test_rerun_resumes_and_changed_inputs_conflict(make_cfg, root, tmp_path):
    coco = tmp_path / "instances.json"
    shutil.copy(DATA / "coco_instances.json", coco)
    cfg = assisted(make_cfg, root, "assisted.format=coco", f"assisted.annotations={coco}")
    first = run_stage(cfg)
    done = sorted((root.parent / "out" / "_done").rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in done]
    again = run_stage(cfg)
    assert [p.stat().st_mtime_ns for p in done] == stamps  # finished shards are not redone
    assert again["masks"] == first["masks"] and again["import"] == first["import"]
    coco.write_text(coco.read_text().replace('"people"', '"crowd"'))
    with pytest.raises(OutputConflict):
        run_stage(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["assisted.format=yolo", "assisted.annotations=x"], "assisted.format"),
        (["assisted.format=coco"], "give an annotation file"),
        (["assisted.format=coco", "assisted.annotations=/no/such/file.json"], "does not exist"),
        (
            ["assisted.format=coco", "assisted.image_root=null", f"assisted.clicks={DATA / 'clicks.json'}"],
            "needs the images",
        ),
    ],
)
def test_config_errors_name_the_key(make_cfg, root, overrides, message):
    cfg = assisted(make_cfg, root, *overrides)
    with pytest.raises(ConfigError, match=message):
        run_stage(cfg)


@pytest.mark.slow
def test_runs_on_ray_with_click_replay(make_cfg, root):
    cfg = assisted(
        make_cfg,
        root,
        "runtime=local",
        "runtime.progress=false",
        "runtime.num_workers=1",
        "runtime.cpus_per_worker=1",
        "assisted.format=cvat_xml",
        f"assisted.annotations={DATA / 'cvat' / 'annotations.xml'}",
        f"assisted.clicks={DATA / 'clicks.json'}",
    )
    summary = run_stage(cfg)
    assert summary["shards_failed"] == {} and summary["images_ok"] == summary["images"] == 3
    masks = read_masks(cfg["output"]["dir"]).to_pylist()
    assert sum(m["source"] == "click" for m in masks) == 4 and sum(m["source"] == "human" for m in masks) == 7
