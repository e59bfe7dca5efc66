"""The command line: help, printing the config, and bad keys or values rejected before any work."""

import subprocess
import sys

import pytest

from data_engine.config import validate
from data_engine.errors import ConfigError


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "data_engine", *args], capture_output=True, text=True, cwd=cwd)


def test_help_says_what_each_stage_does_and_lists_the_config_groups():
    from data_engine.stages import STAGES

    result = cli("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in STAGES:  # one line per stage: its name and a description
        line = next(ln for ln in lines if ln.split()[:1] == [name])
        assert len(line.split()) > 3, line
    for group in ("stage", "model", "amg", "runtime"):
        assert any(ln.split()[:1] == [group] for ln in lines), group
    assert "sa1b_paper" in result.stdout and "ray_cluster" in result.stdout
    assert "--cfg job" in result.stdout  # how to see a stage's options


@pytest.mark.parametrize("arg, choices", [("stage=autoo", "auto, "), ("runtime=seriall", "local, ray_cluster, serial")])
def test_mistyped_group_option_gets_one_line_with_the_choices(arg, choices):
    result = cli(arg)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and arg in result.stderr and choices in result.stderr


def test_cfg_job_prints_the_composed_config():
    result = cli("--cfg", "job", "amg=sa1b_paper", "model=vit_h", "model.checkpoint=/x/sam_vit_h_4b8939.pth")
    assert result.returncode == 0, result.stderr
    assert "stability_score_offset: 1.0" in result.stdout
    assert "variant: vit_h" in result.stdout and "points_per_side: 32" in result.stdout


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["amg.not_a_key=3"], "not_a_key"),
        (["amg.pred_iou_thresh=1.5"], "amg.pred_iou_thresh"),
        (["amg.points_per_side=many"], "amg.points_per_side"),
        (["amg.stability_levels=[0.6,0.5]"], "amg.stability_levels"),
        (["runtime.max_retries=-1"], "runtime.max_retries"),
        (["model=vit_h"], "model.checkpoint"),
        (["model.checkpoint=/no/such/file.pth"], "model.checkpoint"),
        (["input.path=/no/such/folder"], "input.path"),
        (["stage=nope"], "stage"),
        (["+input.foo=1"], "input.foo"),
        (["+output.colour=red"], "output.colour"),
        (["+runtime.gpu_type=a100"], "runtime.gpu_type"),
        (["amg.crop_overlap_ratio=5"], "amg.crop_overlap_ratio"),
        (["input.extensions=[png]"], "input.extensions"),
        (["output.overlays=-1"], "output.overlays"),
        (["amg.stability_score_offset=inf"], "amg.stability_score_offset"),
        (["amg.images_per_batch=0"], "amg.images_per_batch"),
        (["amg.host_threads=-1"], "amg.host_threads"),
        (["amg.mask_nms_thresh=1.5"], "amg.mask_nms_thresh"),
        (["stage=sweep", "sweep.pilot=/no/such/run"], "sweep.pilot"),
    ],
)
def test_bad_key_or_value_is_rejected_before_any_work(tmp_path, args, phrase):
    out = tmp_path / "out"
    result = cli(f"output.dir={out}", "runtime=serial", *args)
    assert result.returncode != 0
    assert phrase in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists(), "work started before the config was rejected"


GROUPS = {
    "stage": ["auto", "synth", "train", "assisted", "audit", "export", "sweep"],  # own sections: their own tests
    "model": [
        "tiny",
        "vit_b",
        "vit_l",
        "vit_h",
        "sam2.1_hiera_t",
        "sam2.1_hiera_s",
        "sam2.1_hiera_b+",
        "sam2.1_hiera_l",
    ],
    "amg": ["sa1b", "sa1b_paper", "reference", "sam2", "tiny"],
    "runtime": ["local", "ray_cluster", "serial"],
}


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_config_group_option_composes_and_validates(make_cfg, tmp_path, group, option):
    ckpt = tmp_path / "weights.pth"
    ckpt.write_bytes(b"x")
    extra = [f"model.checkpoint={ckpt}"] if group == "model" and option.startswith(("vit", "sam2")) else []
    needs = {  # the inputs a stage cannot run without
        "train": [f"train.data=[{tmp_path}]"],
        "assisted": [f"assisted.annotations={ckpt}"],
        "audit": [f"audit.pred={tmp_path}", f"audit.expert={tmp_path}"],
        "export": [f"export.dataset={tmp_path}"],
        "sweep": [f"sweep.pilot={tmp_path}"],
    }
    extra += needs.get(option, []) if group == "stage" else []
    cfg = make_cfg(f"{group}={option}", *extra, small=False)
    validate(cfg)
    assert cfg[group]["name" if group in ("stage", "runtime") else "variant"] == option if group != "amg" else True


def test_default_preset_is_the_sa1b_recipe(make_cfg):
    amg = make_cfg(small=False)["amg"]
    assert (amg["points_per_side"], amg["crop_n_layers"], amg["crop_n_points_downscale_factor"]) == (32, 2, 2)
    assert (amg["pred_iou_thresh"], amg["stability_score_thresh"], amg["stability_levels"]) == (0.88, 0.95, [0.5, 0.55])
    assert (amg["box_nms_thresh"], amg["crop_nms_thresh"], amg["max_mask_area_frac"]) == (0.7, 0.7, 0.95)
    assert amg["min_mask_region_area"] == 100 and not amg["keep_largest_small_region"]
    assert amg["mask_nms_thresh"] is None and not amg["keep_candidates"]  # off: the SA-1B recipe unchanged
    assert make_cfg("amg=sa1b_paper", small=False)["amg"]["stability_score_offset"] == 1.0


def test_output_dir_that_is_a_file_is_rejected(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = cli(f"output.dir={target}", "runtime=serial")
    assert result.returncode == 2 and "output.dir" in result.stderr and target.read_text() == "x"


def test_run_with_no_image_found_exits_nonzero(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    result = cli(f"input.path={tmp_path / 'in'}", f"output.dir={tmp_path / 'out'}", "runtime=serial")
    assert result.returncode == 1 and "no input image" in result.stderr


def test_validate_names_the_key(make_cfg):
    cfg = make_cfg("amg.crop_n_layers=-1")
    with pytest.raises(ConfigError, match="amg.crop_n_layers"):
        validate(cfg)
