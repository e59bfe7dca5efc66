"""Damaged and hostile inputs that once ended in a traceback: deeply nested JSON given as an export,
and a run folder whose run.json is not a run record, given as another stage's input or as output.dir.

Each must be one line saying what is wrong and what to do: a UserError, which the CLI prints on one
line with exit 2. Nested JSON is read in a subprocess under a memory limit.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from test_auto_stage import write_images
from test_hostile_input import REPO, run_limited

from data_engine.io.dataset import RunRecordError, read_run_record
from data_engine.runtime import runs

NESTED = "[" * 200000 + "]" * 200000
CLI_LIMIT_MB = 8192  # the CLI imports torch, whose CUDA libraries map about 5 GB of address space


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m data_engine ARGS` in a fresh interpreter under CLI_LIMIT_MB of address space."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (CLI_LIMIT_MB << 20, CLI_LIMIT_MB << 20))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "data_engine", "runtime=serial", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, preexec_fn=limit)


def assert_one_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit 2, one stderr line holding every `expected` text, no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for text in expected:
        assert text in result.stderr, result.stderr


def fake_prefill(folder: Path, record: str) -> Path:
    """A stage=semi output folder holding only its run.json (with `record` as the file's text)."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(record)
    return folder


# ----------------------------------------------------------------------------------------------
# Deeply nested JSON
# ----------------------------------------------------------------------------------------------

READERS = """
from data_engine.importers import clicks, import_annotations
from data_engine.io import coco
from data_engine.io.dataset import read_run_record
from data_engine.errors import UserError
from pathlib import Path
readers = {
    "coco": lambda: import_annotations("coco", args["path"]),
    "labelstudio": lambda: import_annotations("labelstudio", args["path"]),
    "clicks": lambda: clicks.read(args["path"], None),
    "io.coco.load": lambda: coco.load(args["path"]),
    "run.json": lambda: read_run_record(Path(args["path"]).parent, "output.dir"),
}
found = {}
for name, read in readers.items():
    try:
        found[name] = ["read", str(read())[:80]]
    except UserError as err:
        found[name] = [type(err).__name__, str(err)]
# LabelMe rejects an unreadable file in its report (one file of a folder)
found["labelme report"] = [r["reason"] for r in import_annotations("labelme", args["path"])[1]]
print(json.dumps(found))
"""


def test_every_json_reader_refuses_deep_nesting_as_a_user_error(tmp_path):
    path = tmp_path / "run.json"  # also the run record of tmp_path
    path.write_text(NESTED)
    found = run_limited(READERS, path=str(path))
    [labelme] = found.pop("labelme report")
    assert labelme.startswith("unreadable file: ") and "nested too deeply" in labelme
    assert len(found) == 5
    for name, (kind, message) in found.items():
        assert kind != "read", f"{name} read nested JSON: {message}"
        assert "\n" not in message and "nested too deeply" in message, (name, message)


def test_nested_json_as_a_label_studio_export_for_semi_merge_is_one_line(tmp_path):
    prefill = fake_prefill(tmp_path / "semi", json.dumps({"fingerprint": "f", "input_root": None}))
    (tmp_path / "export.json").write_text(NESTED)
    args = [f"semi_merge.annotations={tmp_path / 'export.json'}", f"output.dir={tmp_path / 'out'}"]
    result = cli("stage=semi_merge", f"semi_merge.prefill={prefill}", *args)
    assert_one_line(result, "export.json is not a readable JSON file", "nested too deeply")


def test_nested_json_as_a_coco_file_for_assisted_is_one_line(tmp_path):
    (tmp_path / "coco.json").write_text(NESTED)
    result = cli("stage=assisted", f"assisted.annotations={tmp_path / 'coco.json'}", f"output.dir={tmp_path / 'out'}")
    assert_one_line(result, "coco.json is not a readable JSON file", "nested too deeply")


# ----------------------------------------------------------------------------------------------
# Damaged run folders
# ----------------------------------------------------------------------------------------------

DAMAGED = {
    "not-json": ("{not json", "JSONDecodeError"),
    "empty-object": ("{}", "no fingerprint"),
    "a-list": ("[1, 2]", "a JSON list, not an object"),
    "bad-input-root": (json.dumps({"fingerprint": "f", "input_root": 5}), "input_root is 5"),
    "bad-config": (json.dumps({"fingerprint": "f", "config": []}), "config is not an object"),
}


@pytest.mark.parametrize("text, reason", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_run_record_is_one_line_naming_the_key_the_file_and_what_to_do(tmp_path, text, reason):
    folder = fake_prefill(tmp_path / "semi", text)
    with pytest.raises(RunRecordError) as err:
        read_run_record(folder, "semi_merge.prefill", fingerprint=True)
    message = str(err.value)
    assert message.startswith(f"semi_merge.prefill: {folder / 'run.json'} is not a usable run record")
    assert reason in message and "rerun the stage that wrote it" in message and "\n" not in message


@pytest.mark.parametrize("text", ["{not json", "{}"], ids=["not-json", "empty-object"])
def test_semi_merge_from_a_damaged_prefill_folder_is_one_line(tmp_path, text):
    prefill = fake_prefill(tmp_path / "semi", text)
    (tmp_path / "export.json").write_text("[]")
    args = [f"semi_merge.annotations={tmp_path / 'export.json'}", f"output.dir={tmp_path / 'out'}"]
    result = cli("stage=semi_merge", f"semi_merge.prefill={prefill}", *args)
    assert_one_line(result, "semi_merge.prefill:", "is not a usable run record", "stage=semi run")


@pytest.mark.parametrize("text", ["{not json", '{"input_root": 5}'], ids=["not-json", "bad-input-root"])
def test_a_dataset_read_by_release_train_audit_and_annotate_with_a_damaged_run_json_is_one_line(
    tmp_path, make_cfg, text
):
    from data_engine.release.plan import open_dataset
    from data_engine.stages import run_stage
    from data_engine.stages.audit import image_root
    from data_engine.train.data import parquet_image_root

    folder = fake_prefill(tmp_path / "data", text)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    readers = {
        "release.data": lambda: open_dataset(folder, None),
        "train.data": lambda: parquet_image_root(folder),
        "audit.pred": lambda: image_root(None, {"kind": "dataset", "path": str(folder)}, {}),
        "annotate.source": lambda: run_stage(make_cfg("stage=annotate", f"annotate.source={folder}")),
    }
    for key, read in readers.items():
        with pytest.raises(RunRecordError, match=rf"^{key}: .*run\.json is not a usable run record"):
            read()


def test_a_damaged_run_json_in_output_dir_is_one_line_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{not json")
    cfg = {"output": {"dir": str(out), "overwrite": False}, "stage": {"name": "x"}}
    with pytest.raises(RunRecordError, match=r"^output\.dir: .*is not a usable run record.*output\.overwrite=true"):
        runs.prepare_output(out, cfg, {})
    record = runs.prepare_output(out, {**cfg, "output": {"dir": str(out), "overwrite": True}}, {})
    assert json.loads((out / "run.json").read_text())["fingerprint"] == record["fingerprint"]


def test_auto_with_a_damaged_run_json_in_output_dir_is_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{not json")
    write_images(tmp_path / "in", 1)
    result = cli("stage=auto", "model=tiny", f"output.dir={out}", f"input.path={tmp_path / 'in'}")
    assert_one_line(result, "output.dir:", "JSONDecodeError", "output.overwrite=true")
