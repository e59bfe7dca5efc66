"""The demo loop gives the same report figures on machines of other core counts: the real engine=demo,
shrunk (small scenes, few training steps), run twice in one process whose torch thread count is 1 and
then 2 (what torch picks by default on a 1-core and a 2-core machine), and its engine_report.json
compared figure by figure. Only timing fields are left out of the comparison. The shrunk loop pins
engine.num_threads=1 (the demo: 2), far faster than 2 threads on a small machine shared with other work."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import compose_cfg

from data_engine.stages import run_stage

# Pure timing fields of engine_report.json, left out of the comparison (everything else must be equal)
TIMING_STEP_FIELDS = ("seconds",)  # per step: wall-clock seconds
TIMING_SUMMARY_FIELDS = ("model_share",)  # per shard stage: share of the workers' time spent in the model

# Shrinking overrides by stage, replacing the demo's value of the same key or added to its overrides
SHRINK = {
    "synth": ["synth.num_scenes=2", "synth.min_size=96", "synth.max_size=96", "synth.max_objects=6"],
    "train": ["train.steps=2", "train.warmup_steps=1", "train.checkpoint_every=2", "train.masks_per_image=4"],
    "detector": [
        "detector.steps=6",
        "detector.warmup_steps=2",
        "detector.checkpoint_every=6",
        "detector.min_size=96",
        "detector.max_size=96",
    ],
    # every box of the briefly trained detector is prompted, so that stage 2 has prefilled masks to review
    # and the verifier has labels to learn from
    "semi": [
        "detector.min_size=96",
        "detector.max_size=96",
        "amg.points_per_side=8",
        "semi.box_score_thresh=0.0",
        "semi.max_boxes=40",
    ],
    "verifier": ["verifier.steps=20", "verifier.checkpoint_every=20"],
    "auto": ["amg.points_per_side=8"],
}


def shrink(overrides: list[str], extra: list[str]) -> list[str]:
    """`overrides` with each key of `extra` set to its value there (replaced in place, or appended)."""
    values = {o.split("=", 1)[0]: o for o in extra}
    kept = [values.pop(o.split("=", 1)[0], o) for o in overrides]
    return kept + list(values.values())


def shrunk_steps(steps: list[dict]) -> list[dict]:
    out = []
    for step in steps:
        if "rounds" in step:
            out.append({**step, "steps": shrunk_steps(step["steps"])})
        else:
            out.append({**step, "overrides": shrink(list(step.get("overrides", [])), SHRINK.get(step["stage"], []))})
    return out


def shrunk_demo(out: Path) -> dict:
    cfg = compose_cfg(["stage=engine", "engine=demo", f"output.dir={out}"])
    engine = cfg["engine"]
    engine["steps"] = shrunk_steps(engine["steps"])
    engine["num_threads"] = 1
    engine["evaluate"] = {
        **engine["evaluate"],
        "max_images": 2,
        "amg": {**engine["evaluate"]["amg"], "points_per_side": 8},
    }
    return cfg


def figures(report: dict) -> dict:
    """The report without its paths and timing fields: per step its status and numeric figures, per
    model its figures, and the totals."""
    steps = {}
    for s in report["steps"]:
        kept = {k: v for k, v in s.items() if k not in TIMING_STEP_FIELDS + ("overrides", "left_out", "folder")}
        kept["summary"] = {k: v for k, v in (s["summary"] or {}).items() if k not in TIMING_SUMMARY_FIELDS}
        steps[s["folder"]] = kept
    models = {m["model"]: {k: v for k, v in m.items() if k != "step"} for m in report["models"]}
    return {"steps": steps, "models": models, "totals": report["totals"]}


def run_with_threads(out: Path, threads: int) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_stage(shrunk_demo(out))
    finally:
        torch.set_num_threads(before)
    return json.loads((out / "engine_report.json").read_text())


def test_the_shrunk_demo_on_1_and_2_process_threads_gives_identical_report_figures(tmp_path):
    first = figures(run_with_threads(tmp_path / "a", 1))
    second = figures(run_with_threads(tmp_path / "b", 2))
    assert first["steps"].keys() == second["steps"].keys()
    for folder in first["steps"]:
        assert first["steps"][folder] == second["steps"][folder], folder
    assert first["models"] == second["models"]
    assert first["totals"] == second["totals"]
    detector = first["steps"]["11_detector"]["summary"]
    assert detector["steps"] == 6 and "last_loss.loss" in detector  # the detector trained and its loss is compared
