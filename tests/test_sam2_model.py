"""SAM 2.1 image models: building from a checkpoint, one clear error for a bad one, the config's checks,
prompts through SAM 2's predictor, and the project's Hydra left working after `sam2` was imported."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from images import shapes_image
from sam2_fixtures import SIDE, VARIANT, sam2_checkpoint, sam2_model  # noqa: F401

from data_engine import build_sam
from data_engine.config import validate
from data_engine.errors import ConfigError
from data_engine.model import build as models
from data_engine.model.build import CheckpointError


def test_checkpoint_loads_into_the_variant_on_cpu(sam2_checkpoint, sam2_model):  # noqa: F811
    loaded = build_sam(VARIANT, checkpoint=sam2_checkpoint, device="cpu", image_size=SIDE)
    assert models.is_sam2(loaded) and not models.is_sam2(build_sam("tiny", device="cpu"))
    assert loaded.device.type == "cpu" and not loaded.training and loaded.image_size == SIDE
    assert models.model_checksum(loaded) == models.model_checksum(sam2_model)


def test_a_checkpoint_of_another_size_is_one_line_naming_it(sam2_checkpoint):  # noqa: F811
    with pytest.raises(CheckpointError) as err:
        build_sam("sam2.1_hiera_s", checkpoint=sam2_checkpoint, device="cpu")
    message = str(err.value)
    assert "\n" not in message and "'sam2.1_hiera_s'" in message
    assert "mis-shaped tensors; it looks like a 'sam2.1_hiera_t' checkpoint" in message


def test_a_sam_checkpoint_is_refused_by_sam2_and_a_missing_one_names_the_official_file(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(models.seeded_sam("tiny").state_dict(), path)
    with pytest.raises(CheckpointError, match="it looks like a 'tiny' checkpoint"):
        build_sam(VARIANT, checkpoint=path, device="cpu")
    with pytest.raises(CheckpointError, match=r"model\.checkpoint=/path/to/sam2\.1_hiera_tiny\.pt"):
        build_sam(VARIANT)


def test_official_files_and_urls_are_listed_for_every_size():
    assert set(models.SAM2) <= set(models.OFFICIAL) and len(models.SAM2) == 4
    assert all(len(models.OFFICIAL[v][1]) == 64 for v in models.SAM2)
    assert models.OFFICIAL["sam2.1_hiera_b+"][0] == "sam2.1_hiera_base_plus.pt"


def test_config_checks_the_sam2_model_section(make_cfg, sam2_checkpoint):  # noqa: F811
    cfg = make_cfg(f"model={VARIANT}", f"model.checkpoint={sam2_checkpoint}", "amg=sam2")
    assert cfg["model"]["image_size"] == 1024 and cfg["amg"]["use_m2m"] is False
    validate(cfg)
    with pytest.raises(ConfigError, match=r"model\.checkpoint: model=sam2\.1_hiera_l needs .*sam2\.1_hiera_large\.pt"):
        validate(make_cfg("model=sam2.1_hiera_l"))
    with pytest.raises(ConfigError, match=r"model\.image_size: must be a multiple of 32"):
        validate(make_cfg(f"model={VARIANT}", f"model.checkpoint={sam2_checkpoint}", "model.image_size=100"))
    with pytest.raises(ConfigError, match=r"model\.image_size: is a SAM 2\.1 setting"):
        validate(make_cfg("model=tiny", "+model.image_size=512"))


def test_click_replay_runs_on_sam2_predictor(sam2_model):  # noqa: F811
    from data_engine.io import rle
    from data_engine.model.click_replay import ClickReplayer

    image = shapes_image(3, 96, 128)
    target = np.zeros(image.shape[:2], bool)
    target[20:60, 30:90] = True
    objects = [{"clicks": [[60, 40, 1], [35, 25, 1], [100, 80, 0]], "final_counts": rle.encode(target[None])[0]}]
    (result,) = ClickReplayer(sam2_model).replay_image(image, objects)
    assert len(result["iou_per_click"]) == 3 and len(result["predicted_iou_per_click"]) == 3
    assert rle.decode(result["model_counts"], 96, 128).shape == (96, 128)


def test_box_prompts_match_sam2_image_predictor(sam2_model):  # noqa: F811
    """generate_from_boxes (stage 2's prefill) gives SAM2ImagePredictor's mask for each box."""
    from data_engine.amg.generator import mask_generator
    from data_engine.io import rle
    from data_engine.model.sam2_model import Sam2Predictor

    image = shapes_image(4, 120, 160)
    boxes = np.array([[10, 10, 90, 70], [40, 30, 150, 110], [0, 0, 159, 119]], dtype=np.float64)
    generator = mask_generator(
        sam2_model,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        min_mask_region_area=0,
        max_mask_area_frac=None,
    )
    ours = generator.generate_from_boxes(image, boxes)
    predictor = Sam2Predictor(sam2_model)
    predictor.set_image(image)
    assert sorted(ours["box_index"]) == [0, 1, 2]
    for row, index in enumerate(ours["box_index"]):
        masks, scores, _ = predictor.predict(box=boxes[index], multimask_output=False)
        assert rle.mask_iou(rle.decode(ours["segmentation"][row], 120, 160), masks[0] > 0) >= 0.99
        assert ours["predicted_iou"][row] == pytest.approx(float(scores[0]), abs=1e-5)


HYDRA_AFTER_SAM2 = """
import sys
from hydra.core.global_hydra import GlobalHydra
from data_engine.model.build import seeded_sam
seeded_sam("sam2.1_hiera_t", image_size=64)  # the first import of sam2 in this process
assert "sam2" in sys.modules and not GlobalHydra.instance().is_initialized()
from data_engine.config import compose
assert compose(["model=sam2.1_hiera_t"])["model"]["variant"] == "sam2.1_hiera_t"
from data_engine.cli import main
sys.argv = ["data-engine", "stage=synth", "synth.num_scenes=1", "runtime=serial", "output.dir=" + sys.argv[1]]
main()
print("cli ran")
"""


def test_the_cli_composes_and_runs_after_a_sam2_model_was_built_in_the_process(tmp_path):
    root = Path(__file__).parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", HYDRA_AFTER_SAM2, str(tmp_path / "synth")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0 and "cli ran" in proc.stdout, proc.stderr[-3000:]
    assert (tmp_path / "synth" / "summary.json").exists()
