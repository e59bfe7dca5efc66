"""The GPU path: generator, automatic stage, quality figures and train stage on a CUDA device.

Skipped where there is no CUDA device (CI has none). On a GPU machine: `pytest -m gpu tests/test_gpu.py`;
`benchmarks/gpu_checks.sh` runs these with the GPU timings.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from images import shapes_image
from test_auto_stage import write_images
from test_generator_reference import assert_same_masks, reference_settings, run_both
from test_train import fixed_batch, run_killed_at_step_3, scenes, train_cfg  # noqa: F401 (fixtures)

from data_engine.io import rle
from data_engine.io.dataset import read_masks
from data_engine.model.build import build_sam, seeded_sam
from data_engine.stages import run_stage
from data_engine.synth import scenes as synth
from data_engine.train import evaluate as quality
from data_engine.train import recipe as T
from data_engine.train.recipe import batch_loss
from data_engine.train.settings import Train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def on(device: str, cfg: dict) -> dict:
    """The composed config with model.device set (the tests' shrunk config pins the CPU)."""
    cfg["model"]["device"] = device
    return cfg


def test_reference_preset_matches_segment_anything_on_cuda(make_cfg):
    sam = build_sam("tiny", device="cuda")
    image = shapes_image(0)
    ref, ours = run_both(sam, reference_settings(make_cfg), image)
    assert len(ref) >= 3, "too few masks for the comparison to mean anything"
    assert_same_masks(ref, ours, *image.shape[:2])


def test_automatic_stage_on_cuda_gives_the_cpu_masks(make_cfg, tmp_path):
    # Bundled samples, 16x16 grid, no crops. CPU and GPU round differently (cuDNN's TF32 convolutions),
    # so a mask near a filter's threshold may flip: most masks must match, not all
    masks = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        summary = run_stage(on(device, make_cfg("amg.points_per_side=16", f"output.dir={out}")))
        assert summary["images_failed"] == 0
        masks[device] = read_masks(out).to_pylist()
    assert len(masks["cpu"]) >= 10, "too few masks for the comparison to mean anything"
    assert abs(len(masks["cuda"]) - len(masks["cpu"])) <= 0.1 * len(masks["cpu"])
    matched = 0
    for image_id in {m["image_id"] for m in masks["cpu"]}:
        cpu = [m for m in masks["cpu"] if m["image_id"] == image_id]
        gpu = [m for m in masks["cuda"] if m["image_id"] == image_id]
        if gpu:
            iou = rle.iou_matrix(
                [m["segmentation"] for m in cpu], [m["segmentation"] for m in gpu], cpu[0]["height"], cpu[0]["width"]
            )
            matched += int((iou.max(1) >= 0.95).sum())
    assert matched >= 0.9 * len(masks["cpu"])


def test_quality_figures_on_cuda_match_the_cpu():
    fresh = [synth.make_scene(4242, i) for i in range(4)]
    figures = {d: quality.point_figures(build_sam("tiny", device=d), fresh, min_area=200) for d in ("cpu", "cuda")}
    assert figures["cuda"]["point_prompts"] == figures["cpu"]["point_prompts"] >= 20
    assert abs(figures["cuda"]["point_miou"] - figures["cpu"]["point_miou"]) < 0.005
    assert abs(figures["cuda"]["iou_correlation"] - figures["cpu"]["iou_correlation"]) < 0.01


def test_a_few_steps_lower_the_loss_on_cuda(fixed_batch):  # noqa: F811
    sam = seeded_sam("tiny", 0).to("cuda").train()
    images, masks = fixed_batch
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-3)

    def loss_now():
        generator = torch.Generator(device="cuda").manual_seed(0)  # same prompts every time
        return batch_loss(sam, images, masks, generator, T.recipe_of(Train()), train_encoder=True)

    initial = loss_now()[0].item()
    for _ in range(6):
        loss, _ = loss_now()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_now()[0].item() < 0.8 * initial


def test_interrupted_run_on_cuda_resumes_from_its_checkpoint(make_cfg, scenes, tmp_path, monkeypatch):  # noqa: F811
    straight = run_stage(on("cuda", train_cfg(make_cfg, scenes, tmp_path / "straight", "train.steps=3")))
    assert straight["steps"] == 3
    reference = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    cfg = on("cuda", train_cfg(make_cfg, scenes, tmp_path / "resumed", "train.steps=3"))
    run_killed_at_step_3(cfg, monkeypatch)
    assert run_stage(cfg)["steps"] == 3
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    # Deterministic kernels (train.deterministic, the default): the same weights as the uninterrupted run
    assert [k for k in reference["model"] if not torch.equal(reference["model"][k], resumed["model"][k])] == []
    rows = [json.loads(ln) for ln in (tmp_path / "resumed" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in rows)
    # The model trained on the GPU loads on a CPU
    build_sam("tiny", checkpoint=tmp_path / "resumed" / "model.pt", device="cpu")


def test_ray_workers_take_the_gpu(make_cfg, tmp_path):
    ray = pytest.importorskip("ray")
    write_images(tmp_path / "in", 4)
    # model.device null: each Ray worker picks CUDA if Ray gave it a GPU
    cfg = make_cfg(f"input.path={tmp_path / 'in'}", "input.shard_size=2", "runtime=local", "runtime.progress=false")
    cfg["model"]["device"] = None
    try:
        summary = run_stage(cfg)
    finally:
        ray.shutdown()
    assert summary["shards_failed"] == {} and summary["images_ok"] == 4
    workers = [json.loads(p.read_text())["worker"] for p in sorted((tmp_path / "out" / "_done").rglob("*.json"))]
    assert len(workers) == 2 and all(w["pid"] != os.getpid() and w["device"].startswith("cuda") for w in workers)
