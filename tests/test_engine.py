"""The engine loop: step references and rounds, checks before anything runs, skip / invalidate / resume,
failures, and the report. Engines here are small dicts put in place of the composed engine section;
their steps are quick stages (synth, annotate, audit) on a few 64-px scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_cfg

from data_engine.engine import runner
from data_engine.engine.steps import check_references, expand, resolve
from data_engine.errors import ConfigError
from data_engine.stages import run_stage

SCENES = ["synth.num_scenes=2", "synth.min_size=64", "synth.max_size=64", "synth.max_objects=3"]


def engine_cfg(tmp_path: Path, steps: list, evaluate: dict | None = None) -> dict:
    cfg = compose_cfg(["stage=engine"], tmp_path)
    cfg["engine"] = {"description": "test", "steps": steps, **({"evaluate": evaluate} if evaluate else {})}
    return cfg


def quick_steps(audit_expert: str = "{scenes}") -> list:
    """scenes -> annotators -> audit of the scenes against themselves; plus an independent synth step."""
    return [
        {"name": "scenes", "stage": "synth", "overrides": SCENES},
        {"name": "other", "stage": "synth", "overrides": SCENES + ["synth.seed=5"]},
        {"name": "annotators", "stage": "annotate", "overrides": ["annotate.source={scenes}"]},
        {"name": "audit", "stage": "audit", "overrides": ["audit.pred={scenes}", f"audit.expert={audit_expert}"]},
    ]


def mtimes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def under(times: dict, folder: str) -> dict:
    return {k: v for k, v in times.items() if k.startswith(folder + "/")}


# ----------------------------------------------------------------------------------------------
# Steps: rounds and references
# ----------------------------------------------------------------------------------------------


def test_rounds_expand_with_numbered_names_and_references_resolve_to_folders():
    steps = expand(
        [
            {"name": "seed", "stage": "synth"},
            {
                "rounds": 3,
                "steps": [
                    {"name": "import", "stage": "synth", "overrides": ["synth.seed=10{round}"]},
                    {
                        "name": "retrain",
                        "stage": "train",
                        "overrides": ["train.data=[{all:import}]", "model.checkpoint={last:retrain}/model.pt"],
                    },
                ],
            },
            {"name": "auto", "stage": "auto", "overrides": ["model.checkpoint={last:retrain}/model.pt", "x={seed}"]},
        ]
    )
    names = [s["name"] for s in steps]
    assert names == ["seed", "import_1", "retrain_1", "import_2", "retrain_2", "import_3", "retrain_3", "auto"]
    out = Path("/out")
    first, third, auto = (resolve(steps[i], steps, out) for i in (2, 6, 7))
    # Round 1 has no earlier retrain: the checkpoint override is left out (the engine's model stays)
    assert first["overrides"] == ["train.data=[/out/02_import_1]"]
    assert first["dropped"] == ["model.checkpoint={last:retrain}/model.pt"]
    assert third["overrides"] == [
        "train.data=[/out/02_import_1,/out/04_import_2,/out/06_import_3]",
        "model.checkpoint=/out/05_retrain_2/model.pt",
    ]
    assert third["depends"] == ["import_1", "import_2", "import_3", "retrain_2"]
    assert auto["overrides"] == ["model.checkpoint=/out/07_retrain_3/model.pt", "x=/out/01_seed"]
    assert resolve(steps[3], steps, out)["overrides"] == ["synth.seed=102"]


def test_a_second_block_goes_on_numbering_and_refers_back_to_the_first():
    block = {"rounds": 2, "steps": [{"name": "retrain", "stage": "train", "overrides": ["a={last:retrain}"]}]}
    steps = expand([block, block])
    assert [s["name"] for s in steps] == ["retrain_1", "retrain_2", "retrain_3", "retrain_4"]
    assert resolve(steps[2], steps, Path("/o"))["overrides"] == ["a=/o/02_retrain_2"]


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"name": "a", "stage": "synth", "overrides": ["x={b}"]}], "engine step a: {b} .* does not exist"),
        (
            [{"name": "a", "stage": "synth", "overrides": ["x={b}"]}, {"name": "b", "stage": "synth"}],
            "engine step a: {b} .* comes later",
        ),
        ([{"name": "a", "stage": "synth", "overrides": ["x={last:retrian}"]}], "no step is named retrian"),
        ([{"name": "a", "stage": "synth", "overrides": ["x={round}"]}], "not in a rounds block"),
        ([{"name": "a", "stage": "nope"}], "engine step a: unknown stage 'nope'"),
        ([{"name": "a", "stage": "synth"}, {"name": "a", "stage": "synth"}], "engine step a: two steps"),
        ([{"name": "a", "stage": "synth", "typo": 1}], r"unknown keys \['typo'\]"),
        ([{"rounds": 0, "steps": [{"name": "a", "stage": "synth"}]}], "rounds: must be an integer >= 1"),
        ([{"name": "a", "stage": "engine"}], "unknown stage 'engine'"),
    ],
)
def test_bad_steps_and_references_are_rejected_with_the_step_named(entries, message):
    with pytest.raises(ConfigError, match=message):
        check_references(entries)


def test_a_missing_reference_is_rejected_before_anything_runs(tmp_path):
    cfg = engine_cfg(tmp_path, quick_steps(audit_expert="{nowhere}"))
    with pytest.raises(ConfigError, match="engine step audit: {nowhere} .* does not exist"):
        run_stage(cfg)
    assert not (tmp_path / "out").exists()


def test_every_step_is_composed_and_checked_before_the_first_runs(tmp_path):
    steps = quick_steps()
    steps[3]["overrides"].append("audit.min_iou=2")  # the last step cannot run
    with pytest.raises(ConfigError, match="engine step audit: audit.min_iou"):
        run_stage(engine_cfg(tmp_path, steps))
    assert not (tmp_path / "out").exists()
    steps[3]["overrides"][-1] = "audit.no_such_key=1"
    with pytest.raises(ConfigError, match="engine step audit: .*no_such_key"):
        run_stage(engine_cfg(tmp_path, steps))


# ----------------------------------------------------------------------------------------------
# Running: one tree, skip, invalidate, fail and continue
# ----------------------------------------------------------------------------------------------


def test_the_loop_writes_one_tree_and_a_rerun_rewrites_nothing(tmp_path):
    cfg = engine_cfg(tmp_path, quick_steps())
    summary = run_stage(cfg)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("0*")) == ["01_scenes", "02_other", "03_annotators", "04_audit"]
    assert (out / "03_annotators" / "clicks.json").is_file() and (out / "04_audit" / "metrics.json").is_file()
    report = json.loads((out / "engine_report.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["done"] * 4
    assert report["steps"][0]["dataset"]["images"] == 2
    assert report["totals"]["final_audit"]["recall@0.5"] == 1.0  # exact masks against themselves
    assert summary["steps_done"] == 4 and (out / "engine_report.html").is_file()

    before = mtimes(out)
    run_stage(cfg)
    assert mtimes(out) == before


def test_a_changed_step_is_recomputed_with_every_later_step_and_nothing_before(tmp_path, caplog):
    run_stage(engine_cfg(tmp_path, quick_steps()))
    out = tmp_path / "out"
    before = mtimes(out)
    steps = quick_steps()
    steps[1]["overrides"] = SCENES + ["synth.seed=6"]  # 'other': nothing depends on it, but later steps rerun
    run_stage(engine_cfg(tmp_path, steps))
    after = mtimes(out)
    assert under(after, "01_scenes") == under(before, "01_scenes")
    for folder in ("02_other", "03_annotators", "04_audit"):
        changed = under(after, folder)
        assert changed and all(changed[k] != before.get(k) for k in changed), folder
    assert "02_other recomputed from scratch: its definition changed" in caplog.text
    assert "03_annotators recomputed from scratch: an earlier step was recomputed" in caplog.text


def test_a_failing_step_stops_the_loop_and_a_rerun_after_the_fix_goes_on_from_it(tmp_path):
    expert = tmp_path / "expert.json"
    expert.write_text("{not json")
    cfg = engine_cfg(tmp_path, quick_steps(audit_expert=str(expert)))
    cfg["engine"]["steps"].append({"name": "last", "stage": "synth", "overrides": SCENES})
    with pytest.raises(
        runner.StepFailed, match=r"^engine step 04_audit \(audit\) failed: AuditError: .*not a readable JSON file"
    ) as err:
        run_stage(cfg)
    assert "\n" not in str(err.value)
    out = tmp_path / "out"
    assert not (out / "05_last").exists()
    report = json.loads((out / "engine_report.json").read_text())
    assert report["totals"]["steps_failed"] == ["04_audit"]

    before = mtimes(out)
    expert.write_text((out / "03_annotators" / "annotations.json").read_text())  # the fix
    run_stage(cfg)
    after = mtimes(out)
    for folder in ("01_scenes", "02_other", "03_annotators"):
        assert under(after, folder) == under(before, folder)
    assert (out / "04_audit" / "metrics.json").is_file() and (out / "05_last" / "summary.json").is_file()


def test_an_interrupted_step_resumes_in_its_folder(tmp_path, monkeypatch):
    """A step whose record says 'running' (the process was killed) is resumed with the stage's own
    resume: the synth stage keeps its finished shards."""
    steps = [{"name": "scenes", "stage": "synth", "overrides": SCENES + ["synth.num_scenes=4", "synth.shard_size=2"]}]
    cfg = engine_cfg(tmp_path, steps)
    run_stage(cfg)
    out = tmp_path / "out"
    record = json.loads((out / "_engine" / "01_scenes.json").read_text())
    (out / "_engine" / "01_scenes.json").write_text(json.dumps({**record, "status": "running"}))
    (out / "01_scenes" / "_done" / "000000" / "shard-000000001.json").unlink()  # the kill came in the second shard
    kept = (out / "01_scenes" / "masks" / "000000" / "shard-000000000.parquet").stat().st_mtime_ns
    run_stage(cfg)
    assert (out / "01_scenes" / "masks" / "000000" / "shard-000000000.parquet").stat().st_mtime_ns == kept
    assert (out / "01_scenes" / "_done" / "000000" / "shard-000000001.json").is_file()
    assert json.loads((out / "_engine" / "01_scenes.json").read_text())["status"] == "done"


def test_the_engine_commands_runtime_and_model_reach_every_step(tmp_path):
    from data_engine.engine.steps import plan

    cfg = engine_cfg(
        tmp_path,
        [
            {"name": "a", "stage": "auto"},
            {"name": "b", "stage": "auto", "overrides": ["model.device=cuda"]},
            {"name": "c", "stage": "auto", "overrides": ["model=vit_b", "model.download=true"]},
        ],
    )
    cfg["runtime"]["max_retries"] = 7
    a, b, c = plan(cfg)
    assert a["cfg"]["runtime"]["max_retries"] == 7 and c["cfg"]["runtime"]["max_retries"] == 7
    assert a["cfg"]["model"]["device"] == "cpu" and b["cfg"]["model"]["device"] == "cuda"
    assert c["cfg"]["model"]["variant"] == "vit_b" and c["cfg"]["model"]["device"] is None
    assert a["cfg"]["output"]["dir"] == str(tmp_path / "out" / "01_a")


def test_the_engine_commands_model_is_measured_on_the_expert_set_and_reported(tmp_path):
    steps = [{"name": "experts", "stage": "synth", "overrides": SCENES + ["synth.num_scenes=1"]}]
    evaluate = {"experts": "experts", "max_images": 1, "min_area": 30, "amg": {"points_per_side": 4}}
    run_stage(engine_cfg(tmp_path, steps, evaluate))
    report = json.loads((tmp_path / "out" / "engine_report.json").read_text())
    (initial,) = report["models"]
    figures = initial["figures"]
    assert initial["model"] == "initial" and figures["images"] == 1 and figures["point_prompts"] >= 1
    assert 0 < figures["point_miou"] <= 1 and 0 <= figures["recall@0.5"] <= 1
    assert figures["expert_masks"] == report["steps"][0]["dataset"]["masks"]
    with pytest.raises(ConfigError, match="engine.evaluate.experts: 'nope' is not a step"):
        run_stage(engine_cfg(tmp_path, steps, {**evaluate, "experts": "nope"}))
