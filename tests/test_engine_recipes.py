"""The shipped engine configs: every step of the CPU demo and of the full-scale ViT-H recipe composes and
validates (the recipe with a stand-in checkpoint file and data folder: it is never run here)."""

from __future__ import annotations

from conftest import compose_cfg

from data_engine.config import validate
from data_engine.engine.steps import plan


def test_the_demo_plans_every_step_with_stage_1_stage_2_and_the_automatic_stage(tmp_path):
    cfg = compose_cfg(["stage=engine", "engine=demo"], tmp_path)
    validate(cfg)
    steps = plan(cfg)
    stages = [s["stage"] for s in steps]
    for stage in ("synth", "annotate", "assisted", "train", "detector", "semi", "semi_merge", "auto", "audit"):
        assert stage in stages, stage
    retrains = [s for s in steps if s["stage"] == "train"]
    assert retrains[0]["dropped"] == ["model.checkpoint={last:retrain}/model.pt"]  # starts from the embedded model
    assert retrains[-1]["cfg"]["train"]["data"][-1].endswith("_merge_2")
    auto = next(s for s in steps if s["stage"] == "auto")
    assert auto["cfg"]["model"]["checkpoint"] == f"{retrains[-1]['dir']}/model.pt"
    # The mask verifier after each stage-2 round: round 2 routed by round 1's, and run again without it
    verifiers = [s for s in steps if s["stage"] == "verifier"]
    semis = {s["name"]: s for s in steps if s["stage"] == "semi"}
    assert semis["semi_1"]["dropped"] == ["verifier.checkpoint={last:verifier}/model.pt"]
    assert semis["semi_2"]["cfg"]["verifier"]["checkpoint"] == f"{verifiers[0]['dir']}/model.pt"
    assert semis["semi_unverified"]["cfg"]["verifier"]["checkpoint"] is None
    assert semis["semi_unverified"]["cfg"]["input"]["path"] == semis["semi_2"]["cfg"]["input"]["path"]
    assert auto["cfg"]["verifier"]["checkpoint"] == f"{verifiers[-1]['dir']}/model.pt"


def stand_in_recipe_inputs(tmp_path, checkpoint_name: str):
    """A checkpoint file and a data folder with the experts' batch, enough to plan a recipe (never run)."""
    checkpoint = tmp_path / checkpoint_name
    checkpoint.write_bytes(b"stand-in: never loaded here")
    data = tmp_path / "data"
    (data / "experts" / "images").mkdir(parents=True)
    (data / "experts" / "annotations.json").write_text('{"images": [], "annotations": []}')
    return checkpoint, data


def test_the_vit_h_recipe_plans_six_stage_1_and_five_stage_2_retrainings(tmp_path):
    checkpoint, data = stand_in_recipe_inputs(tmp_path, "sam_vit_h_4b8939.pth")
    cfg = compose_cfg(
        ["stage=engine", "engine=sa1b_vit_h", "model=vit_h", f"model.checkpoint={checkpoint}", f"engine.data={data}"],
        tmp_path,
        small=False,
    )
    validate(cfg)
    steps = plan(cfg)  # composes and validates every step
    retrains = [s for s in steps if s["stage"] == "train"]
    assert [s["name"] for s in retrains] == [f"retrain_{k}" for k in range(1, 12)]
    assert sum(s["stage"] == "assisted" for s in steps) == 7 and sum(s["stage"] == "semi" for s in steps) == 5
    assert all(s["cfg"]["model"]["variant"] == "vit_h" for s in steps if "model" in s["cfg"])
    assert retrains[0]["cfg"]["model"]["checkpoint"] == str(checkpoint)  # round 1: the official weights
    assert retrains[6]["cfg"]["model"]["checkpoint"] == f"{retrains[5]['dir']}/model.pt"
    assert steps[-2]["stage"] == "auto" and steps[-2]["cfg"]["model"]["checkpoint"] == f"{retrains[-1]['dir']}/model.pt"
    assert steps[-2]["cfg"]["amg"]["pred_iou_thresh"] == 0.88  # the SA-1B recipe


def test_the_sam2_recipe_runs_the_same_loop_with_a_sam2_model(tmp_path):
    checkpoint, data = stand_in_recipe_inputs(tmp_path, "sam2.1_hiera_large.pt")
    overrides = [f"model.checkpoint={checkpoint}", f"engine.data={data}"]
    cfg = compose_cfg(["stage=engine", "engine=sa1b_sam2", "model=sam2.1_hiera_l", *overrides], tmp_path, small=False)
    validate(cfg)
    steps = plan(cfg)
    vit_h = plan(compose_cfg(["stage=engine", "engine=sa1b_vit_h", "model=vit_h", *overrides], tmp_path, small=False))
    assert [(s["name"], s["stage"]) for s in steps] == [(s["name"], s["stage"]) for s in vit_h]
    assert all(s["cfg"]["model"]["variant"] == "sam2.1_hiera_l" for s in steps if "model" in s["cfg"])
    retrains = [s for s in steps if s["stage"] == "train"]
    assert {s["cfg"]["train"]["lr"] for s in retrains} == {5e-6}
    assert {s["cfg"]["train"]["lr"] for s in vit_h if s["stage"] == "train"} == {1e-5}
    auto = next(s for s in steps if s["stage"] == "auto")
    assert auto["cfg"]["amg"]["pred_iou_thresh"] == 0.88 and auto["cfg"]["model"]["image_size"] == 1024
