"""The Python API: Dataset.open over an output folder, and data_engine.run composing a stage as the CLI does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from maskdata import rect, write_dataset
from PIL import Image
from pycocotools.coco import COCO

from data_engine import Dataset, run
from data_engine.cli import config_key
from data_engine.config import CONF_DIR
from data_engine.errors import ConfigError
from data_engine.io.dataset import MASK_SCHEMA, DatasetError, shard_name, shard_path, table, write_atomic
from data_engine.io.images import load_rgb

QUIET = ["runtime=serial", "runtime.progress=false", "output.overlays=0"]
# Reads a dataset's masks, all of them or one image's, in a fresh interpreter: rows read, peak Arrow memory
PEAK = """
import sys, pyarrow as pa, pyarrow.compute as pc
from data_engine import Dataset
ds = Dataset.open(sys.argv[1])
got = ds.masks(filter=pc.field("image_id") == 7) if sys.argv[2] == "filter" else ds.masks()
print(got.num_rows, pa.default_memory_pool().max_memory())
"""


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Three synthetic scenes, one per shard, written by the synth stage through data_engine.run."""
    out = tmp_path_factory.mktemp("api") / "synth"
    summary = run(
        "synth", synth_num_scenes=3, synth_min_size=64, synth_max_size=96, synth_shard_size=1, output_dir=out,
        overrides=QUIET,
    )  # fmt: skip
    return out, summary


def test_run_returns_the_stage_summary(synth):
    out, summary = synth
    assert summary["output"] == str(out) and summary["images_ok"] == 3 and summary["shards"] == 3
    assert json.loads((out / "summary.json").read_text())["masks"] == summary["masks"]


def test_open_reads_the_tables_the_config_and_the_image_root(synth):
    out, summary = synth
    ds = Dataset.open(out)
    assert len(list((out / "masks").rglob("*.parquet"))) == 3  # the nested shard layout, read as one table
    assert ds.images().num_rows == 3 and ds.masks().num_rows == summary["masks"]
    assert len(ds.masks(as_pandas=True)) == summary["masks"]
    assert ds.run["stage"]["name"] == "synth" and ds.run["synth"]["num_scenes"] == 3
    assert ds.image_root == out / "pictures"
    assert Dataset.open(out, image_root="/elsewhere").image_root.as_posix() == "/elsewhere"


def test_a_mask_filter_is_applied_while_the_shards_are_read(synth):
    ds = Dataset.open(synth[0])
    every = ds.masks().to_pandas()
    cut = float(every["area"].median())
    big = ds.masks(filter=pc.field("area") > cut, columns=["mask_id", "area"])
    assert big.column_names == ["mask_id", "area"]
    assert sorted(big["mask_id"].to_pylist()) == sorted(every.loc[every["area"] > cut, "mask_id"])
    assert 0 < big.num_rows < len(every)
    assert ds.scan().count_rows(filter=pc.field("area") > cut) == big.num_rows
    one = int(every["image_id"].iloc[0])
    assert set(ds.masks(filter=pc.field("image_id") == one)["image_id"].to_pylist()) == {one}


def test_a_shard_is_read_on_its_own(synth):
    ds = Dataset.open(synth[0])
    ids = ds.shard_ids()
    assert ids == [shard_name(i) for i in range(3)]
    names = [ds.shard(i, columns=["file_name"])["file_name"].to_pylist() for i in ids]
    assert sum(names, []) == ds.images(columns=["file_name"])["file_name"].to_pylist()
    assert ds.shard(ids[1], "masks").num_rows == ds.masks(filter=pc.field("file_name") == names[1][0]).num_rows
    with pytest.raises(DatasetError, match="part 'grid'"):
        ds.shard(ids[0], "grid")


def test_a_filtered_read_holds_only_the_rows_it_passes(tmp_path):
    """40 shards of 1,000 masks (10 images each): one image's masks are read without holding the others."""
    for s in range(40):
        rows = [
            {"mask_id": s * 1000 + i, "image_id": s * 10 + i // 100, "height": 1, "width": 1, "segmentation": "x" * 400}
            for i in range(1000)
        ]
        write_atomic(table(rows, MASK_SCHEMA), shard_path(tmp_path, "masks", shard_name(s)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    read = {}
    for mode in ("filter", "full"):
        done = subprocess.run(
            [sys.executable, "-c", PEAK, str(tmp_path), mode], capture_output=True, text=True, env=env
        )
        read[mode] = [int(v) for v in done.stdout.split()]
    assert read["filter"][0] == 100 and read["full"][0] == 40_000
    assert read["filter"][1] * 8 < read["full"][1], read


def test_image_and_decode_give_the_picture_and_the_mask(synth):
    out, _ = synth
    ds = Dataset.open(out)
    row = ds.masks().to_pylist()[0]
    picture, mask = ds.image(row["image_id"]), ds.decode(row)
    assert picture.dtype == np.uint8 and np.array_equal(picture, load_rgb(out / "pictures" / row["file_name"], 1 << 30))
    assert mask.dtype == bool and mask.shape == picture.shape[:2] and mask.sum() == row["area"]
    assert ds.decode(ds.masks(as_pandas=True).iloc[0]).sum() == row["area"]  # a pandas row too
    with pytest.raises(DatasetError, match="is not an image of"):
        ds.image(12345)


def test_image_follows_a_symlink_out_of_the_image_root_only_if_the_run_did(tmp_path):
    images, outside = tmp_path / "images", tmp_path / "outside"
    images.mkdir(), outside.mkdir()
    Image.fromarray(np.full((64, 80, 3), 7, np.uint8)).save(outside / "a.png")
    os.symlink(outside / "a.png", images / "a.png")
    folder = write_dataset(tmp_path / "ds", {"a.png": [rect(64, 80, 0, 0, 10, 10)]})
    image_id = Dataset.open(folder).images()["image_id"][0].as_py()
    for follow in (False, True):
        record = {"input_root": str(images), "config": {"input": {"follow_symlinks": follow}}}
        (folder / "run.json").write_text(json.dumps(record))
        if follow:
            assert Dataset.open(folder).image(image_id).shape == (64, 80, 3)
        else:
            with pytest.raises(DatasetError, match="did not follow symlinks"):
                Dataset.open(folder).image(image_id)


def test_to_coco_writes_every_mask_as_rle(synth, tmp_path):
    ds = Dataset.open(synth[0])
    path = ds.to_coco(tmp_path / "coco.json")
    coco = COCO(str(path))
    rows = {r["mask_id"]: r for r in ds.masks().to_pylist()}
    assert set(coco.getAnnIds()) == set(rows) and len(coco.getImgIds()) == 3
    for ann_id, row in list(rows.items())[:5]:
        assert np.array_equal(coco.annToMask(coco.loadAnns(ann_id)[0]).astype(bool), ds.decode(row))
    big = json.loads(ds.to_coco(tmp_path / "big.json", pc.field("area") > 100).read_text())
    assert len(big["annotations"]) == sum(r["area"] > 100 for r in rows.values())
    # The same file as the export stage's
    run("export", export_format="coco", export_dataset=synth[0], output_dir=tmp_path / "export", overrides=QUIET)
    exported = json.loads((tmp_path / "export" / "coco" / "instances.json").read_text())
    written = json.loads(path.read_text())
    for part in ("images", "annotations"):
        assert {a["id"]: a for a in written[part]} == {a["id"]: a for a in exported[part]}


def test_join_audit_gives_each_mask_its_pair(synth, tmp_path):
    out, summary = synth
    audit = tmp_path / "audit"
    run("audit", audit_pred=out, audit_expert=out / "instances.json", output_dir=audit, overrides=QUIET)
    joined = Dataset.open(out).join_audit(audit, columns=["area"], as_pandas=True)
    assert len(joined) == summary["masks"] and list(joined.columns)[:2] == ["mask_id", "area"]
    assert (joined["iou"] == 1.0).all() and (joined["expert_area"] == joined["area"]).all()  # the exact masks
    other = write_dataset(tmp_path / "other", {"a.png": [rect(64, 80, 0, 0, 10, 10)]})
    with pytest.raises(DatasetError, match="audited .*, not"):
        Dataset.open(other).join_audit(audit)
    with pytest.raises(DatasetError, match="no pairs.parquet: give the output.dir of a stage=audit run"):
        Dataset.open(out).join_audit(tmp_path)


def test_a_folder_that_is_not_a_dataset_is_one_line_saying_what_to_do(tmp_path, synth):
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "empty": "is not a dataset folder (no masks/, images/ or run.json); give the output.dir",
        tmp_path / "missing": "is no folder",
        synth[0] / "instances.json": "stage=assisted assisted.format=coco assisted.annotations=FILE.json",
    }
    for path, expected in cases.items():
        with pytest.raises(DatasetError) as err:
            Dataset.open(path, key="audit.pred")
        assert str(err.value).startswith(f"audit.pred: {path} ") and expected in str(err.value)
        assert "\n" not in str(err.value)


def test_run_refuses_bad_keys_and_values_with_config_error(tmp_path):
    out = {"output_dir": tmp_path / "out", "overrides": QUIET}
    cases = [
        ({"synth_num_scene": 3}, "synth.num_scene: unknown key; did you mean synth.num_scenes?"),
        ({"synth_num_scenes": 0}, "synth.num_scenes: must be an integer >= 1, got 0"),
        ({"train_steps": 3}, "train.steps: cannot be set for stage=synth"),
        ({"amg": "tiny"}, "amg: a config group; choose its option with overrides=['amg=...']"),
    ]
    for keys, message in cases:
        with pytest.raises(ConfigError) as err:
            run("synth", **keys, **out)
        assert str(err.value).startswith(message)
    with pytest.raises(ConfigError, match="amg=nope: no such option; choose from"):
        run("synth", overrides=["amg=nope"])
    with pytest.raises(ConfigError, match="^synth.seeds: unknown key"):
        run("synth", overrides=["synth.seeds=1"])
    assert not (tmp_path / "out").exists()


def test_keywords_name_dotted_keys():
    assert config_key("input_path") == "input.path"
    assert config_key("semi_merge_prefill") == "semi_merge.prefill"  # the longest section name wins
    assert config_key("seed") == "seed" and config_key("runtime.num_workers") == "runtime.num_workers"


def test_run_inside_a_hydra_app_leaves_its_state(tmp_path):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        app = GlobalHydra.instance().hydra
        run("synth", synth_num_scenes=1, synth_max_size=64, synth_min_size=64, output_dir=tmp_path, overrides=QUIET)
        assert GlobalHydra.instance().hydra is app
    assert not GlobalHydra.instance().is_initialized()
