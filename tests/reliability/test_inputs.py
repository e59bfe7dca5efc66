"""Hostile and changing inputs: special files, stuck reads, links out of the root, files changed
between runs; and a worker that reads images while the model runs."""

import json
import os
import threading
import time
from pathlib import Path

import pytest
from test_auto_stage import write_images

from data_engine.amg import worker as auto
from data_engine.io.dataset import read_images
from data_engine.stages import run_stage


def run_within(cfg: dict, seconds: float) -> dict:
    """run_stage in a thread, so a hang fails the test instead of stopping the suite."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(run_stage(cfg)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the run did not end within {seconds} s"
    return result


def rows(cfg: dict) -> dict:
    return {r["file_name"]: r for r in read_images(cfg["output"]["dir"]).to_pylist()}


def test_a_fifo_named_like_an_image_gets_a_failed_row_and_the_run_ends(make_cfg, tmp_path):
    write_images(tmp_path / "in", 2)
    os.mkfifo(tmp_path / "in" / "x.png")
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    summary = run_within(cfg, 60)
    found = rows(cfg)
    assert found["x.png"]["status"] == "failed" and "FIFO, not a regular file" in found["x.png"]["error"]
    assert [found[n]["status"] for n in ("img_00.png", "img_01.png")] == ["ok", "ok"]
    assert summary["images_failed"] == 1


def test_an_image_stuck_in_reading_times_out_as_failed(make_cfg, tmp_path, monkeypatch):
    write_images(tmp_path / "in", 3)
    real_load = auto.load_rgb

    def stuck_on_one(path, max_pixels):
        if Path(path).name == "img_01.png":
            time.sleep(60)  # far past both limits below, so only a working time limit ends the run in time
        return real_load(path, max_pixels)

    monkeypatch.setattr(auto, "load_rgb", stuck_on_one)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.image_timeout_s=3")
    run_within(cfg, 50)  # generous for a loaded 2-core machine
    found = rows(cfg)
    assert found["img_01.png"]["error"] == "LoadTimeout: timed out after 3 s reading/decoding"
    assert found["img_00.png"]["status"] == found["img_02.png"]["status"] == "ok"


def test_a_renamed_input_is_redone_on_resume_and_the_old_row_goes(make_cfg, tmp_path):
    write_images(tmp_path / "in", 4)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=2")
    run_stage(cfg)
    out = Path(cfg["output"]["dir"])
    untouched = (out / "images" / "000000" / "shard-000000000.parquet").stat().st_mtime_ns
    (tmp_path / "in" / "img_03.png").rename(tmp_path / "in" / "img_09.png")
    summary = run_stage(cfg)
    assert sorted(rows(cfg)) == ["img_00.png", "img_01.png", "img_02.png", "img_09.png"]
    assert summary["images"] == 4 and summary["shards_failed"] == {}
    assert (
        out / "images" / "000000" / "shard-000000000.parquet"
    ).stat().st_mtime_ns == untouched  # its files did not change


def test_a_changed_file_and_a_removed_file_are_never_silently_kept(make_cfg, tmp_path):
    write_images(tmp_path / "in", 3)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=2")
    run_stage(cfg)
    (tmp_path / "in" / "img_02.png").unlink()
    write_images(tmp_path / "other", 2)
    os.replace(tmp_path / "other" / "img_01.png", tmp_path / "in" / "img_00.png")  # same name, new content
    summary = run_stage(cfg)
    out = Path(cfg["output"]["dir"])
    assert sorted(rows(cfg)) == ["img_00.png", "img_01.png"] and summary["shards"] == 1
    assert (
        not (out / "images" / "000000" / "shard-000000001.parquet").exists()
        and not (out / "_done" / "000000" / "shard-000000001.json").exists()
    )
    done = json.loads((out / "_done" / "000000" / "shard-000000000.json").read_text())
    assert done["images"] == 2 and len(done["inputs"]) == 64


def links_out_of_the_root(tmp_path: Path) -> Path:
    write_images(tmp_path / "in", 1)
    write_images(tmp_path / "secret", 2)
    (tmp_path / "in" / "outside.png").symlink_to(tmp_path / "secret" / "img_00.png")
    (tmp_path / "in" / "outside_dir").symlink_to(tmp_path / "secret", target_is_directory=True)
    (tmp_path / "in" / "inside.png").symlink_to(tmp_path / "in" / "img_00.png")
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in", target_is_directory=True)
    return tmp_path / "in"


def test_symlinks_leaving_the_input_folder_are_skipped_and_recorded(make_cfg, tmp_path):
    cfg = make_cfg(f"input.path={links_out_of_the_root(tmp_path)}")
    run_stage(cfg)
    assert sorted(rows(cfg)) == ["img_00.png", "inside.png"]
    ignored = json.loads((Path(cfg["output"]["dir"]) / "run.json").read_text())["ignored_files"]
    assert set(ignored) == {"outside.png", "outside_dir"}
    assert all("outside the input folder (input.follow_symlinks=true follows it)" in r for r in ignored.values())


def test_symlinks_are_followed_with_follow_symlinks(make_cfg, tmp_path):
    cfg = make_cfg(f"input.path={links_out_of_the_root(tmp_path)}", "input.follow_symlinks=true")
    run_within(cfg, 60)  # the folder link back to the root is not followed twice
    names = sorted(rows(cfg))
    assert names == ["img_00.png", "inside.png", "outside.png", "outside_dir/img_00.png", "outside_dir/img_01.png"]


class SlowGenerator:
    """Stands in for the model: records when each generate call starts and ends."""

    device = "cpu"

    def __init__(self, calls: list):
        self.calls = calls

    def generate(self, image):
        begin = time.monotonic()
        time.sleep(0.3)
        self.calls.append(("generate", begin, time.monotonic()))
        return {"segmentation": []}


def test_the_next_image_is_decoded_while_the_model_runs(make_cfg, tmp_path, monkeypatch):
    names = write_images(tmp_path / "in", 3)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    calls, real_load = [], auto.load_rgb

    def recording_load(path, max_pixels):
        calls.append(("load", Path(path).name, time.monotonic()))
        return real_load(path, max_pixels)

    monkeypatch.setattr(auto, "load_rgb", recording_load)
    worker = auto.AutoWorker(cfg, str(tmp_path / "in"))
    worker.generator = SlowGenerator(calls)
    worker({"shard_id": "shard-000000000", "files": names})
    getattr(worker, "close", lambda: None)()
    load_started = {name: t for kind, name, t in [c for c in calls if c[0] == "load"]}
    generate_ended = [end for kind, _, end in [c for c in calls if c[0] == "generate"]]
    # image i+1 was being read before the model finished image i
    assert load_started[names[1]] < generate_ended[0] and load_started[names[2]] < generate_ended[1]


def test_the_shard_write_does_not_block_the_worker(make_cfg, tmp_path, monkeypatch):
    from data_engine.runtime import runs

    names = write_images(tmp_path / "in", 1)
    cfg = make_cfg(f"input.path={tmp_path / 'in'}")
    real_write, written = runs.write_shard, []

    def slow_write(*args):
        time.sleep(1.0)
        real_write(*args)
        written.append(time.monotonic())

    monkeypatch.setattr(runs, "write_shard", slow_write)
    worker = auto.AutoWorker(cfg, str(tmp_path / "in"))
    worker.generator = SlowGenerator([])
    stats = worker({"shard_id": "shard-000000000", "files": names})
    returned = time.monotonic()
    assert written == [] and 0 <= stats["model_seconds"] <= stats["busy_seconds"]
    assert worker.close() == {}
    assert written and written[0] > returned
    done = json.loads((Path(cfg["output"]["dir"]) / "_done" / "000000" / "shard-000000000.json").read_text())
    assert done["images"] == 1 and done["busy_seconds"] >= done["model_seconds"] > 0


@pytest.mark.parametrize("bad", ["input.image_timeout_s=0", "input.image_timeout_s=-1", "input.follow_symlinks=2"])
def test_bad_new_input_settings_are_refused(make_cfg, bad):
    from data_engine.config import validate
    from data_engine.errors import ConfigError

    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        validate(make_cfg(bad))


@pytest.mark.parametrize(
    "size, mtime",
    [
        ([10, 20, 30, 40, 50], [1_700_000_000_123_456_789 + i for i in range(5)]),  # nanoseconds
        ([10, 20, 30, 40, 50], [1.7e9 + i / 3 for i in range(5)]),  # seconds as floats
        ([10, None, 30, 40, 50], [1, 2, 3, None, 5]),  # nulls: kept as None, as before
    ],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_manifest_table_gives_the_same_shards_read_in_batches(tmp_path, monkeypatch, size, mtime, suffix):
    """Stamps are held as arrays and a Parquet manifest read a batch at a time (memory at 11M files),
    giving the digests a list of (size, mtime) tuples gives."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from data_engine.io import inputs

    table = pa.table({"path": [f"d/{i}.jpg" for i in range(5)], "size": size, "mtime": mtime})
    manifest = tmp_path / f"manifest{suffix}"
    pq.write_table(table, manifest) if suffix == ".parquet" else pa_csv.write_csv(table, manifest)
    monkeypatch.setattr(inputs, "MANIFEST_BATCH", 2)
    listing = inputs.list_inputs(manifest)
    assert listing.names == table.column("path").to_pylist()
    as_tuples = list(zip(size, mtime))
    assert listing.stamps[0:5] == as_tuples
    if None not in size + mtime:
        assert isinstance(listing.stamps, inputs.Stamps)
    expected = inputs.make_shards(listing.names, 2, tmp_path, as_tuples)
    assert inputs.make_shards(listing.names, 2, tmp_path, listing.stamps) == expected
