"""The committed tiny model: it is small, build_sam loads it by default, and it segments fresh scenes."""

from __future__ import annotations

import pytest
import torch

from data_engine.model.build import EMBEDDED_TINY, build_sam, model_checksum, seeded_sam
from data_engine.synth import scenes as synth
from data_engine.train import evaluate as quality

FRESH_SEED = 4242  # not the training seed (1), the samples' seed (2) nor the quality script's (1000)
# Twenty scenes, not three: on three scenes one object moves the mean by about 0.01, as much as a
# training cycle adds, so bounds tight enough to mean anything there also ranked checkpoints unreliably.
# The bounds below sit 0.02 under what the weights committed when they were set measure here.
FRESH_SCENES = 20


@pytest.fixture(scope="module")
def fresh_scenes() -> list[dict]:
    return [synth.make_scene(FRESH_SEED, i) for i in range(FRESH_SCENES)]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_thread):
    """Every test in this file runs with one torch thread (see conftest.one_thread)."""


def point_miou(sam, scenes: list[dict]) -> float:
    """Mean best-of-3 IoU of a single point prompt at each object's innermost pixel (objects >= 200 px)."""
    return quality.point_figures(sam, scenes, min_area=200)["point_miou"]


def test_committed_checkpoint_is_small_and_loaded_by_default():
    assert EMBEDDED_TINY.is_file(), "data_engine/model/weights/sam_tiny.pt is missing"
    assert EMBEDDED_TINY.stat().st_size < 8 * 2**20
    sam = build_sam("tiny", device="cpu")
    assert model_checksum(sam) != model_checksum(seeded_sam("tiny"))
    assert all(torch.isfinite(p).all() for p in sam.parameters())


@pytest.fixture(scope="module")
def fresh_point_miou(fresh_scenes) -> tuple[float, float]:
    """Single-point mean IoU on the fresh scenes: (committed model, seeded untrained model)."""
    with torch.no_grad():
        return (
            point_miou(build_sam("tiny", device="cpu"), fresh_scenes),
            point_miou(seeded_sam("tiny").eval(), fresh_scenes),
        )


@pytest.mark.slow
def test_single_point_prompts_segment_fresh_scenes(fresh_point_miou):
    # The committed weights give 0.814 here, the seeded untrained model 0.06
    # (the model card: data_engine/model/weights/MODEL_CARD.md)
    trained, untrained = fresh_point_miou
    assert trained > 0.75
    assert untrained < 0.3


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the committed tiny model's single-point mean IoU is under 0.85 (the model card's figure): "
    "remove this marker when a checkpoint reaching it is committed",
)
def test_single_point_prompts_reach_the_target(fresh_point_miou):
    assert fresh_point_miou[0] >= 0.85


@pytest.mark.slow
def test_correction_clicks_improve_the_mask(fresh_scenes):
    # Interactive sessions on the fresh scenes, the previous logits fed back with each correction
    # click. Mean IoU after 1, 2, 3 clicks: committed weights 0.722, 0.753, 0.764.
    with torch.no_grad():
        after = quality.point_figures(build_sam("tiny", device="cpu"), fresh_scenes, min_area=200, clicks=3)[
            "click_miou"
        ]
    assert after[0] < after[1] < after[2]
    assert after[2] > after[0] + 0.04
    assert after[0] > 0.655 and after[2] > 0.72


@pytest.mark.slow
def test_tiny_preset_recovers_objects_of_a_fresh_scene(make_cfg, fresh_scenes):
    # amg=tiny (the recipe with the predicted-IoU filter at 0.6, as the demo runs it), without the
    # zoomed crops to keep the test short: some masks are kept and they match real objects
    amg = {**make_cfg("amg=tiny", small=False)["amg"], "crop_n_layers": 0}
    scenes = fresh_scenes[:2]  # scenes 0 and 1 of the fresh seed, made once for the module
    with torch.no_grad():
        figures = quality.auto_figures(build_sam("tiny", device="cpu"), scenes, amg)
    # Measured with the committed weights: 35.5 masks per image, 18 of the 19 objects of >= 400 px
    # recovered at IoU 0.75 (with the filter at 0.5: 46.0 masks, 18 objects; two earlier, weaker checkpoints
    # gave 9 and 13 objects). Two scenes are few, so the bound sits between those two counts.
    assert figures["masks_per_image"] >= 2
    assert figures["auto_recall_400px_iou75"] >= 0.6
