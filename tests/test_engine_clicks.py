"""Simulated annotators (synth/clicks.py, stage=annotate): click sessions drawn from exact masks, in the
format stage=assisted replays, and the stage-2 pass over pre-annotations."""

from __future__ import annotations

import json

import numpy as np
from conftest import compose_cfg

from data_engine.stages import run_stage
from data_engine.synth import clicks
from data_engine.synth.scenes import make_scene


def test_sessions_put_positive_clicks_inside_and_negative_clicks_outside_the_object():
    scene = make_scene(3, 0, 128, 160)
    counted = {0: 0, 1: 0}
    for k, obj in enumerate(scene["objects"]):
        if obj["mask"].sum() < 50:
            continue
        rng = np.random.default_rng([0, 0, k])
        session = clicks.session(obj["mask"], rng, max_clicks=4)
        assert 1 <= len(session) <= 4 and session[0][2] == 1
        for x, y, label in session:
            assert obj["mask"][y, x] == bool(label)
            counted[label] += 1
        assert session == clicks.session(obj["mask"], np.random.default_rng([0, 0, k]), max_clicks=4)
    assert counted[0] > 0 and counted[1] > 0  # both kinds drawn


def test_annotate_writes_exports_that_the_assisted_stage_imports_in_full(tmp_path):
    synth = tmp_path / "synth"
    scenes = ["synth.num_scenes=4", "synth.min_size=64", "synth.max_size=80", "synth.max_objects=3"]
    run_stage(compose_cfg(["stage=synth", f"output.dir={synth}", *scenes]))
    made = run_stage(compose_cfg(["stage=annotate", f"annotate.source={synth}", f"output.dir={tmp_path / 'ann'}"]))
    assert made["click_images"] == 2 and made["coco_images"] == 2
    sessions = json.loads((tmp_path / "ann" / "clicks.json").read_text())["images"]
    assert all(o["final_mask"] and o["clicks"] for s in sessions for o in s["objects"])
    imported = run_stage(
        compose_cfg(
            [
                "stage=assisted",
                f"assisted.annotations={tmp_path / 'ann' / 'annotations.json'}",
                f"assisted.clicks={tmp_path / 'ann' / 'clicks.json'}",
                f"input.path={synth / 'pictures'}",
                f"output.dir={tmp_path / 'import'}",
            ]
        )
    )
    expected = made["coco_masks"] + made["click_objects"]
    assert imported["masks"] == expected == imported["import"]["imported"] and imported["import"]["rejected"] == 0
    assert (
        expected + made["masks_skipped_small"]
        == run_stage(compose_cfg(["stage=synth", f"output.dir={synth}", *scenes]))["masks"]
    )
