"""The fully-automatic stage as a job: Parquet output, bad inputs, stable ids, resume, conflicts."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from bad_inputs import make_bad_inputs
from images import shapes_image

from data_engine.io import rle
from data_engine.io.dataset import read_images, read_masks
from data_engine.io.inputs import image_id
from data_engine.runtime.runs import OutputConflict
from data_engine.stages import run_stage

# Loose filters so even a weak model gives masks to check.
LOOSE = ["amg.pred_iou_thresh=0.0", "amg.stability_score_thresh=0.0"]


def write_images(folder: Path, n: int, size=(96, 128)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img_{i:02d}.png"
        cv2.imwrite(str(folder / name), shapes_image(i, *size)[:, :, ::-1])
        names.append(name)
    return names


def parquet_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/*.parquet"))}


def test_every_bad_input_file_has_exactly_one_row(make_cfg, tmp_path):
    expected = make_bad_inputs(tmp_path / "in")
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=5")
    summary = run_stage(cfg)
    rows = {r["file_name"]: r for r in read_images(cfg["output"]["dir"]).to_pylist()}
    assert sorted(rows) == sorted(expected)
    for name, status in expected.items():
        if status == "ok":
            assert rows[name]["status"] == "ok", rows[name]["error"]
        else:
            assert rows[name]["status"] == "failed" and status in rows[name]["error"].lower(), (
                name,
                rows[name]["error"],
            )
    assert summary["images"] == len(expected) and summary["images_failed"] == 6
    run = json.loads((Path(cfg["output"]["dir"]) / "run.json").read_text())
    assert run["ignored_files"] == {"notes.txt": "not an image by extension"}


def test_each_finished_shard_records_where_it_ran(make_cfg, tmp_path):
    write_images(tmp_path / "in", 3)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=2")
    run_stage(cfg)
    done = sorted((Path(cfg["output"]["dir"]) / "_done").rglob("shard-*.json"))
    assert [p.name for p in done] == ["shard-000000000.json", "shard-000000001.json"]
    for path in done:
        stats = json.loads(path.read_text())
        # runtime=serial: this process, on the configured device
        assert stats["worker"] == {"host": socket.gethostname(), "pid": os.getpid(), "device": "cpu"}
        assert stats["images"] in (1, 2) and stats["failed"] == 0


def test_awkward_images_decode_to_rgb_of_the_right_size(make_cfg, tmp_path):
    make_bad_inputs(tmp_path / "in")
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    run_stage(cfg)
    rows = {r["file_name"]: r for r in read_images(cfg["output"]["dir"]).to_pylist()}
    assert (rows["one_pixel.png"]["height"], rows["one_pixel.png"]["width"]) == (1, 1)
    for name in ("gray.png", "rgba.png", "deep16.png", "photo.jpg", "cmyk.jpg", "palette.png"):
        assert (rows[name]["height"], rows[name]["width"]) == (64, 80)


def test_mask_rows_decode_to_their_area_and_bbox(make_cfg, tmp_path):
    write_images(tmp_path / "in", 3)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "amg.points_per_side=12", *LOOSE)
    run_stage(cfg)
    masks = read_masks(cfg["output"]["dir"]).to_pylist()
    assert len(masks) > 0
    for row in masks:
        mask = rle.decode(row["segmentation"], row["height"], row["width"])
        assert mask.sum() == row["area"] > 0
        ys, xs = np.nonzero(mask)
        assert row["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert row["image_id"] == image_id(row["file_name"])
        assert (row["stage"], row["source"], row["model"]) == ("auto", "auto", "tiny")
        # predicted_iou is the IoU head's raw regression output (SAM does not clamp it; with the
        # filters open a weak mask can carry a slightly negative one); stability is a ratio
        assert np.isfinite(row["predicted_iou"]) and 0 <= row["stability_score"] <= 1
        assert len(row["point_coords"]) == 1 and len(row["crop_box"]) == 4


def test_parquet_layout_zstd_and_no_dictionary_on_rle(make_cfg, tmp_path):
    write_images(tmp_path / "in", 2)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", *LOOSE)
    run_stage(cfg)
    out = Path(cfg["output"]["dir"])
    assert sorted(p.name for p in out.rglob("masks/*/*")) == ["shard-000000000.parquet"]
    meta = pq.ParquetFile(out / "masks" / "000000" / "shard-000000000.parquet").metadata
    columns = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert columns["segmentation"].compression == "ZSTD"
    assert not any("DICTIONARY" in str(e) for e in columns["segmentation"].encodings)
    assert any("DICTIONARY" in str(e) for e in columns["file_name"].encodings)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["amg"]["points_per_side"] == 8
    assert run["versions"]["torch"] and len(run["model"]["sha256"]) == 64
    assert not list(out.rglob("*.tmp"))


def test_rerun_skips_finished_shards_and_output_is_identical(make_cfg, tmp_path):
    write_images(tmp_path / "in", 4)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=2", *LOOSE)
    run_stage(cfg)
    out = Path(cfg["output"]["dir"])
    before = parquet_files(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/*.parquet")}
    summary = run_stage(cfg)
    assert parquet_files(out) == before
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.parquet")} == mtimes  # nothing rewritten
    assert summary["images"] == 4


def test_image_ids_are_stable_across_runs_and_input_sets(make_cfg, tmp_path):
    write_images(tmp_path / "a", 3)
    write_images(tmp_path / "b", 5)  # same names plus two more
    ids = []
    for folder in ("a", "b"):
        cfg = make_cfg(f"input.path={tmp_path / folder}", f"output.dir={tmp_path / ('out_' + folder)}")
        run_stage(cfg)
        ids.append({r["file_name"]: r["image_id"] for r in read_images(cfg["output"]["dir"]).to_pylist()})
    assert all(ids[1][name] == value for name, value in ids[0].items())


def test_manifest_input(make_cfg, tmp_path):
    names = write_images(tmp_path / "in", 3)
    manifest = tmp_path / "in" / "list.txt"
    manifest.write_text("# two of three\n" + "\n".join(names[:2]) + "\n")
    cfg = make_cfg(f"input.path={manifest}")
    summary = run_stage(cfg)
    assert summary["images"] == 2
    assert sorted(r["file_name"] for r in read_images(cfg["output"]["dir"]).to_pylist()) == names[:2]


def test_other_settings_in_same_output_are_refused_unless_overwrite(make_cfg, tmp_path):
    write_images(tmp_path / "in", 1)
    run_stage(make_cfg(f"input.path={tmp_path / 'in'}"))
    with pytest.raises(OutputConflict, match="output.overwrite=true"):
        run_stage(make_cfg(f"input.path={tmp_path / 'in'}", "amg.box_nms_thresh=0.5"))
    summary = run_stage(make_cfg(f"input.path={tmp_path / 'in'}", "amg.box_nms_thresh=0.5", "output.overwrite=true"))
    assert summary["images"] == 1


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_shards(tmp_path):
    """The process dies mid-shard (no Ray to retry it); rerunning the same command finishes the job."""
    write_images(tmp_path / "in", 6)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "data_engine",
        "runtime=serial",
        "runtime.progress=false",
        "output.overlays=0",
        "amg.points_per_side=8",
        "amg.crop_n_layers=0",
        f"input.path={tmp_path / 'in'}",
        "input.shard_size=2",
        f"output.dir={out}",
        "debug.crash_on_shard=shard-000000001",
        *LOOSE,
    ]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 17, first.stderr[-2000:]
    assert (out / "_done" / "000000" / "shard-000000000.json").exists() and not (
        out / "_done" / "000000" / "shard-000000001.json"
    ).exists()
    finished = (out / "masks" / "000000" / "shard-000000000.parquet").stat().st_mtime_ns
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (out / "masks" / "000000" / "shard-000000000.parquet").stat().st_mtime_ns == finished
    assert sorted(p.name for p in (out / "_done").rglob("*.json")) == [f"shard-00000000{i}.json" for i in range(3)]
    assert len(read_images(out)) == 6


def test_a_temporary_file_left_by_a_killed_write_is_not_read_as_data(tmp_path):
    """The atomic writer's temporary files are hidden; a worker killed mid-write leaves one behind."""
    from data_engine.io.dataset import read_images, write_shard

    write_shard(tmp_path, "shard-000000000", [], [{"image_id": 1, "file_name": "a.png", "status": "ok"}])
    (tmp_path / "images" / "000000" / ".shard-000000001.0123abcd.tmp.parquet").write_bytes(b"PAR1 cut short")
    assert read_images(tmp_path).column("file_name").to_pylist() == ["a.png"]
