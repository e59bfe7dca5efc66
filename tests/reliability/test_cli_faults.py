"""The command line under user mistakes and interruptions: one line on stderr, no traceback (issue 47)."""

import json
import subprocess
import sys


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
