"""The command line under user mistakes and interruptions: one line on stderr,, no traceback."""

import json
import signal
import subprocess
import sys
import time


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "data_engine", *args], capture_output=True, text=True, **kwargs)


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_misspelt_key_without_plus_gets_one_line_with_the_close_key(tmp_path):
    out = tmp_path / "out"
    result = cli("stage=auto", "amg.pred_iou_thres=0.5", f"output.dir={out}", "runtime=serial")
    assert result.returncode == 2
    assert "amg.pred_iou_thres: unknown key; did you mean amg.pred_iou_thresh?" in one_line(result)
    result = cli("input.pth=x", f"output.dir={out}")
    assert result.returncode == 2 and "did you mean input.path?" in one_line(result)
    result = cli("input.zzzzzz=1", f"output.dir={out}")  # nothing close: the known keys
    assert result.returncode == 2 and "known under input: ['extensions'" in one_line(result)
    assert not out.exists()


def test_the_generator_settings_read_from_its_source_are_its_signature():
    import inspect

    from data_engine.amg.generator import MaskGenerator
    from data_engine.config import generator_settings

    params = inspect.signature(MaskGenerator).parameters
    assert {k: v[0] for k, v in generator_settings().items()} == {
        k: p.default for k, p in params.items() if k != "model"
    }


LIGHT = """
import runpy, sys
sys.argv = ["data-engine", *sys.argv[1:]]
try:
    runpy.run_module("data_engine", run_name="__main__")
except SystemExit:
    pass
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


def test_cfg_job_and_release_verify_do_not_import_torch(tmp_path):
    job = subprocess.run([sys.executable, "-c", LIGHT, "stage=train", "--cfg", "job"], capture_output=True, text=True)
    assert "steps:" in job.stdout and "torch imported: False" in job.stderr, job.stderr
    (tmp_path / "release").mkdir()
    verify = [sys.executable, "-c", LIGHT, "stage=release", f"release.verify={tmp_path / 'release'}"]
    verify = subprocess.run([*verify, f"output.dir={tmp_path / 'out'}"], capture_output=True, text=True)
    assert "data-engine: error:" in verify.stderr and "torch imported: False" in verify.stderr, verify.stderr


def test_an_import_whose_annotations_are_all_rejected_says_so_and_where_the_reasons_are(tmp_path):
    coco = {
        "images": [],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4]]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    result = cli(
        "stage=assisted",
        f"assisted.annotations={tmp_path / 'coco.json'}",
        "assisted.image_root=null",
        "log_level=WARNING",
        f"output.dir={out}",
        "runtime=serial",
    )
    assert result.returncode == 1
    line = one_line(result)
    assert "every one of the 1 annotations was rejected (unknown image: 1)" in line
    assert str(out / "import_report.parquet") in line and "no input image" not in line


SYNTH = ["stage=synth", "synth.min_size=64", "synth.max_size=96", "synth.shard_size=5", "synth.num_scenes=1000"]


def test_ctrl_c_ends_in_one_line_with_exit_130_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    args = [*SYNTH, f"output.dir={out}", "runtime=serial", "runtime.progress=false", "log_level=WARNING"]
    run = subprocess.Popen([sys.executable, "-m", "data_engine", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "_done").rglob("*.json")) and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130
    assert stderr == "data-engine: interrupted; rerun the same command to resume\n"
    kept = {p: p.stat().st_mtime_ns for p in (out / "_done").rglob("*.json")}
    assert 0 < len(kept) < 200 and not (out / ".lock").exists()
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 1000
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())  # not redone


def test_a_run_refused_for_its_checkpoint_or_engine_steps_leaves_no_output_folder(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "new" / "out"
    result = cli(
        f"model.checkpoint={tmp_path / 'corrupt.pt'}", f"output.dir={out}", "runtime=serial", "log_level=ERROR"
    )
    assert result.returncode == 2 and "corrupt.pt" in one_line(result)
    assert not (tmp_path / "new").exists()
    steps = 'engine.steps=[{name: a, stage: synth, overrides: ["synth.num_scenes=0"]}]'
    result = cli("stage=engine", steps, "engine.evaluate=null", f"output.dir={out}", "runtime=serial")
    assert result.returncode == 2 and "engine step a: synth.num_scenes" in one_line(result)
    assert not (tmp_path / "new").exists()
    out.mkdir(parents=True)  # a folder the user made is kept
    assert cli("stage=engine", steps, f"output.dir={out}").returncode == 2 and out.is_dir()
