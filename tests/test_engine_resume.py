"""The engine command end to end through the CLI: killed during a training step and rerun, it finishes
with the same report figures as an uninterrupted run; a failing step exits non-zero with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCENES = ["synth.min_size=64", "synth.max_size=80", "synth.max_objects=3"]
ENGINE = {
    "description": "resume test",
    "evaluate": {
        "experts": "experts",
        "max_images": 2,
        "min_area": 30,
        "amg": {"points_per_side": 8, "crop_n_layers": 0, "pred_iou_thresh": 0.5},
    },
    "steps": [
        {"name": "experts", "stage": "synth", "overrides": ["synth.num_scenes=2", "synth.seed=9", *SCENES]},
        {"name": "scenes", "stage": "synth", "overrides": ["synth.num_scenes=3", *SCENES]},
        {"name": "annotators", "stage": "annotate", "overrides": ["annotate.source={scenes}"]},
        {
            "name": "import",
            "stage": "assisted",
            "overrides": [
                "assisted.annotations={annotators}/annotations.json",
                "assisted.clicks={annotators}/clicks.json",
                "input.path={scenes}/pictures",
            ],
        },
        {
            "name": "retrain",
            "stage": "train",
            "overrides": [
                "train.data=[{import}]",
                "train.steps=8",
                "train.images_per_step=1",
                "train.masks_per_image=4",
                "train.checkpoint_every=2",
                "train.warmup_steps=1",
                "train.freeze_image_encoder=true",
                "train.num_threads=1",
            ],
        },
        {
            "name": "auto",
            "stage": "auto",
            "overrides": [
                "input.path={experts}/pictures",
                "model.checkpoint={retrain}/model.pt",
                "amg.points_per_side=8",
                "amg.crop_n_layers=0",
                "amg.pred_iou_thresh=0.5",
            ],
        },
        {"name": "audit", "stage": "audit", "overrides": ["audit.pred={auto}", "audit.expert={experts}"]},
    ],
}


# The engine command as a process (its engine section given as a JSON file, in place of a conf/engine/ yaml)
SCRIPT = """
import json, logging, sys
from data_engine.config import compose
from data_engine.stages import run_stage
logging.basicConfig(level=logging.INFO)
small = ["runtime=serial", "runtime.progress=false", "model.device=cpu"]
cfg = compose(["stage=engine", *small, "output.dir=" + sys.argv[2]])
cfg["engine"] = json.load(open(sys.argv[1]))
run_stage(cfg)
"""


def command(engine: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", SCRIPT, str(engine), str(out)]


def figures(out: Path) -> dict:
    """The report's figures (everything but times and paths)."""
    doc = json.loads((out / "engine_report.json").read_text())
    return {
        "models": doc["models"],
        "steps": [(s["folder"], s["status"], s["dataset"], s.get("clicks")) for s in doc["steps"]],
        "audit": {k: v for k, v in doc["totals"]["final_audit"].items() if k != "step"},
    }


@pytest.mark.slow
def test_killed_during_training_and_rerun_gives_the_same_report_figures(tmp_path):
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps(ENGINE))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(command(engine, straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(engine, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "05_retrain" / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (killed / "05_retrain" / "model.pt").exists(), "not killed mid-training"
    assert json.loads((killed / "_engine" / "05_retrain.json").read_text())["status"] == "running"

    subprocess.run(command(engine, killed), check=True, env=env, capture_output=True)
    assert figures(killed) == figures(straight)
    assert json.loads((killed / "_engine" / "eval" / "retrain.json").read_text())["figures"]["point_prompts"] > 0


def test_a_failing_step_exits_non_zero_with_one_line_naming_it(tmp_path):
    """Through the CLI (`data-engine stage=engine ...`), the engine's steps given on the command line."""
    steps = f"engine.steps=[{{name:broken,stage:annotate,overrides:['annotate.source={tmp_path}']}}]"
    cli = [
        sys.executable,
        "-m",
        "data_engine",
        "stage=engine",
        steps,
        "~engine.evaluate",
        f"output.dir={tmp_path / 'out'}",
    ]
    done = subprocess.run(
        cli + ["runtime=serial"], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("data-engine: error: engine step 01_broken (annotate) failed: DatasetError: annotate.source")
    assert "rerun the same command" in last
