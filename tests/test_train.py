"""The train stage: the recipe lowers the loss, checkpoints resume exactly, sources load, bad settings fail."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from data_engine.errors import ConfigError
from data_engine.io import rle
from data_engine.io.dataset import write_shard
from data_engine.io.inputs import InputError
from data_engine.model.build import seeded_sam
from data_engine.schema import parse
from data_engine.stages import run_stage
from data_engine.stages import train as train_stage
from data_engine.train import loop
from data_engine.train import recipe as T
from data_engine.train.data import TrainDataError, batch, load_sources
from data_engine.train.recipe import batch_loss
from data_engine.train.settings import Train

RECIPE = T.recipe_of(Train())  # the train section's defaults
SMALL_TRAIN = [
    "train.init=scratch",
    "train.images_per_step=1",
    "train.masks_per_image=2",
    "train.warmup_steps=1",
    "train.checkpoint_every=1",
]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_thread):
    """Every test in this file runs with one torch thread (see conftest.one_thread)."""


@pytest.fixture
def scenes(make_cfg, tmp_path):
    """Three synthetic scenes written by the synth stage (Parquet, COCO and pictures)."""
    out = tmp_path / "scenes"
    run_stage(make_cfg("stage=synth", "synth.num_scenes=3", "synth.max_size=256", f"output.dir={out}"))
    return out


@pytest.fixture
def fixed_batch(scenes):
    """One image of the scenes with 4 of its masks, drawn the way the stage draws a batch."""
    examples, _ = load_sources([str(scenes)], None, 256)
    return batch(examples, np.random.default_rng(0), 1, 4, 256)


def train_cfg(make_cfg, scenes, out, *overrides):
    return make_cfg("stage=train", f"train.data=[{scenes}]", f"output.dir={out}", *SMALL_TRAIN, *overrides)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(fixed_batch):
    sam = seeded_sam("tiny", 0).train()
    images, masks = fixed_batch
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-3)

    def loss_now():
        generator = torch.Generator().manual_seed(0)  # same prompts every time
        return batch_loss(sam, images, masks, generator, RECIPE, train_encoder=True)

    initial = loss_now()[0].item()
    for _ in range(6):
        loss, _ = loss_now()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_now()[0].item() < 0.8 * initial


def test_the_recipe_comes_from_the_train_group(make_cfg, tmp_path):
    assert RECIPE == dict(
        box_prob=0.5, correction_clicks=1, coarse_mask_prob=0.0, weights=(20.0, 1.0), all_iou=False, iou_weight=1.0
    )  # SAM's settings, as the train section's defaults give them
    changed = replace(Train(), box_prob=0.1, focal_weight=5.0, supervise_all_iou=True)
    assert T.recipe_of(changed) == {**RECIPE, "box_prob": 0.1, "weights": (5.0, 1.0), "all_iou": True}


@pytest.mark.parametrize("all_iou, outputs_trained", [(False, 1), (True, 3)])
def test_iou_head_learns_the_best_outputs_iou_unless_told_all_three(fixed_batch, all_iou, outputs_trained):
    sam = seeded_sam("tiny", 0).train()
    images, masks = fixed_batch
    predictions = []  # every decoder pass's [K, M] IoU predictions, kept for their gradients

    def keep(module, inputs, output):
        output[1].retain_grad()
        predictions.append(output[1])

    sam.mask_decoder.register_forward_hook(keep)
    recipe = {**RECIPE, "box_prob": 0.0, "correction_clicks": 0, "all_iou": all_iou}
    loss, _ = batch_loss(sam, images, masks, torch.Generator().manual_seed(0), recipe, train_encoder=False)
    loss.backward()
    first = predictions[0]  # the point prompts' 3 outputs: only the best one's IoU is trained unless all_iou
    assert first.shape == (4, 3)
    assert (first.grad != 0).sum(1).tolist() == [outputs_trained] * 4


@pytest.mark.parametrize("iou_weight", [0.0, 1.0, 4.0])
def test_iou_weight_scales_the_iou_heads_gradient(fixed_batch, iou_weight):
    images, masks = fixed_batch
    recipe = {**RECIPE, "box_prob": 0.0}

    def head_grad_and_log(weight):
        sam = seeded_sam("tiny", 0).train()
        loss, stats = batch_loss(
            sam, images, masks, torch.Generator().manual_seed(0), {**recipe, "iou_weight": weight}, train_encoder=False
        )
        loss.backward()
        return torch.cat([p.grad.flatten() for p in sam.mask_decoder.iou_prediction_head.parameters()]), stats

    unit, unit_stats = head_grad_and_log(1.0)
    grad, stats = head_grad_and_log(iou_weight)
    assert unit.abs().sum() > 0
    # The head is trained by the IoU term alone: its gradient scales with the weight
    torch.testing.assert_close(grad, iou_weight * unit)
    # The log keeps the MSE itself; `loss` is the weighted objective
    assert stats["iou_mse"] == pytest.approx(unit_stats["iou_mse"])
    assert stats["loss"] == pytest.approx(unit_stats["loss"] + (iou_weight - 1) * unit_stats["iou_mse"])


def test_the_stage_passes_its_iou_supervision_setting(make_cfg, scenes, tmp_path):
    def logged_iou_mse(name, value):
        run_stage(
            train_cfg(
                make_cfg,
                scenes,
                tmp_path / name,
                "train.steps=1",
                "train.correction_clicks=0",
                "train.box_prob=0",
                f"train.supervise_all_iou={value}",
            )
        )
        return json.loads((tmp_path / name / "loss_log.jsonl").read_text().splitlines()[0])["iou_mse"]

    # Same seed, batch and prompts: only the IoU term's outputs differ (mean of 3 against the best one)
    assert logged_iou_mse("best", "false") != logged_iou_mse("all", "true")


def test_containing_iou_scores_each_output_against_the_masks_holding_its_point():
    whole, part, other = torch.zeros(3, 32, 32, dtype=torch.bool)
    whole[4:28, 4:28] = True
    part[8:16, 8:16] = True
    other[0:4, 0:32] = True  # beside the point
    context = torch.stack([whole, part, other])
    outputs = torch.stack([part, whole, other, whole & ~part])  # 4 candidate masks
    logits = torch.where(outputs, 5.0, -5.0)[None]  # [1, 4, S, S]: one prompt, 4 outputs
    point = torch.tensor([[10.0, 12.0]])  # (x, y) inside part and whole, not in other
    iou = T.containing_iou(logits, point, context)[0]
    ring = (24 * 24 - 64) / (24 * 24)  # the whole without the part, against the whole
    assert iou.tolist() == pytest.approx([1.0, 1.0, 0.0, ring])


def test_batch_gives_every_mask_of_the_image_as_context(scenes):
    examples, _ = load_sources([str(scenes)], None, 256)
    images, masks, contexts = batch(examples[:1], np.random.default_rng(0), 1, 3, 256, context=True)
    assert len(contexts[0]) == len(examples[0]["masks"]) > 3
    assert all(any(torch.equal(m, c) for c in contexts[0]) for m in masks[0])  # the drawn masks are among them
    _, plain = batch(examples[:1], np.random.default_rng(0), 1, 3, 256)  # the same draw without the context
    assert all(torch.equal(a, b) for a, b in zip(plain[0], masks[0]))


@pytest.mark.parametrize("target, calls", [("drawn", 0), ("containing", 1)])
def test_the_stage_passes_its_iou_target_setting(make_cfg, scenes, tmp_path, monkeypatch, target, calls):
    seen = []  # (prompts, masks in the context) per call

    def spy(logits, points, context):
        seen.append((len(points), len(context)))
        return real(logits, points, context)

    real = T.containing_iou
    monkeypatch.setattr(T, "containing_iou", spy)
    run_stage(
        train_cfg(
            make_cfg,
            scenes,
            tmp_path / target,
            "train.steps=1",
            "train.correction_clicks=0",
            "train.box_prob=0",
            f"train.iou_target={target}",
        )
    )
    examples, _ = load_sources([str(scenes)], None, 256)
    assert len(seen) == calls
    assert all(n == 2 and k in [len(e["masks"]) for e in examples] for n, k in seen)


def run_killed_at_step_3(cfg: dict, monkeypatch) -> dict:
    """Run a training stage (the train or the detector stage) until it is killed while logging step 3;
    the checkpoint it leaves (on the CPU)."""
    real_append = loop.append_log

    def crash_at_step_3(out_dir, row):
        real_append(out_dir, row)
        if row["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "append_log", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_stage(cfg)
    monkeypatch.setattr(loop, "append_log", real_append)
    return torch.load(Path(cfg["output"]["dir"]) / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")


def test_interrupted_run_resumes_from_its_checkpoint(make_cfg, scenes, tmp_path, monkeypatch):
    # Uninterrupted reference run
    straight = run_stage(train_cfg(make_cfg, scenes, tmp_path / "straight", "train.steps=3"))
    assert straight["steps"] == 3
    reference = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    # Same run, killed while logging step 3 (after the step-2 checkpoint)
    cfg = train_cfg(make_cfg, scenes, tmp_path / "resumed", "train.steps=3")
    assert run_killed_at_step_3(cfg, monkeypatch)["step"] == 2
    # Rerun: continues at step 3, the log keeps one row per step, weights match the uninterrupted run
    assert run_stage(cfg)["steps"] == 3
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["step"] == 3
    # The same weights, bit for bit, as the uninterrupted run
    assert all(torch.equal(reference["model"][k], resumed["model"][k]) for k in reference["model"])
    rows = [json.loads(ln) for ln in (tmp_path / "resumed" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # The final fp16 model loads into the architecture
    state = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    seeded_sam("tiny").load_state_dict(state)


def test_two_runs_of_one_command_give_the_same_bytes_on_two_threads(make_cfg, scenes, tmp_path):
    # With two threads the relative-position lookup's backward accumulates in a varying order unless
    # torch's deterministic kernels are on (train.deterministic, the default); three tries, as the
    # order only sometimes differs
    def weights(name):
        run_stage(
            train_cfg(
                make_cfg, scenes, tmp_path / name, "train.steps=2", "train.masks_per_image=8", "train.num_threads=2"
            )
        )
        return torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"]

    first = weights("first")
    for n in range(3):
        again = weights(f"again{n}")
        assert [k for k in first if not torch.equal(first[k], again[k])] == []


def test_frozen_image_encoder_stays_unchanged(make_cfg, scenes, tmp_path):
    cfg = train_cfg(make_cfg, scenes, tmp_path / "frozen", "train.steps=1", "train.freeze_image_encoder=true")
    run_stage(cfg)
    trained = torch.load(tmp_path / "frozen" / "checkpoints" / "last.pt", weights_only=True)["model"]
    start = seeded_sam("tiny", cfg["seed"]).state_dict()
    encoder = [k for k in start if k.startswith("image_encoder.")]
    decoder = [k for k in start if k.startswith("mask_decoder.")]
    assert all(torch.equal(start[k], trained[k]) for k in encoder)
    assert any(not torch.equal(start[k], trained[k]) for k in decoder)


def test_torch_settings_are_restored_after_the_run(make_cfg, scenes, tmp_path, monkeypatch):
    # The stage sets torch's thread count, flushes denormal floats for speed and turns on deterministic
    # kernels; all are process-wide, so a caller (a notebook, the tests) gets its own settings back afterwards
    def denormal_survives():
        return (torch.tensor([1e-323], dtype=torch.float64) * 2).item() != 0

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert torch.get_num_threads() == 1 and denormal_survives() and not torch.are_deterministic_algorithms_enabled()
    run_stage(train_cfg(make_cfg, scenes, tmp_path / "settings", "train.steps=1", "train.num_threads=2"))
    assert torch.get_num_threads() == 1
    assert denormal_survives()
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_coco_and_parquet_sources_give_the_same_masks(scenes):
    from_parquet, _ = load_sources([str(scenes)], None, 256)
    from_coco, _ = load_sources([str(scenes / "instances.json")], None, 256)
    assert [e["file_name"] for e in from_parquet] == [e["file_name"] for e in from_coco]
    assert [sorted(e["masks"]) for e in from_parquet] == [sorted(e["masks"]) for e in from_coco]
    assert all(e["image"].shape[0] == 3 and max(e["image"].shape[1:]) == 256 for e in from_parquet)


def test_unusable_images_are_left_out_with_their_reason(make_cfg, scenes, tmp_path):
    # A COCO source with one usable image (the third) and images that are not: a corrupt one, one whose
    # only mask is 3x3 px, a missing one, one without annotations (more below)
    doc = json.loads((scenes / "instances.json").read_text())
    first, second, third = sorted(doc["images"], key=lambda im: im["file_name"])
    (scenes / "pictures" / first["file_name"]).write_bytes(b"not a png")
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != second["id"]]
    doc["annotations"].append(
        {
            "id": 10**6,
            "image_id": second["id"],
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [[10, 10, 13, 10, 13, 13, 10, 13]],
            "area": 9,
            "bbox": [10, 10, 3, 3],
        }
    )
    doc["images"].append({"id": 10**6, "file_name": "gone.png", "height": 64, "width": 64})
    doc["annotations"].append({**doc["annotations"][-1], "id": 10**6 + 1, "image_id": 10**6})
    doc["images"].append({"id": 10**6 + 9, "file_name": "unannotated.png", "height": 64, "width": 64})
    # ... and two annotations that cannot be used: a wrongly sized RLE, and one of no listed image
    doc["annotations"].append(
        {
            "id": 10**6 + 2,
            "image_id": third["id"],
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": {"size": [5, 5], "counts": "25"},
            "area": 1,
            "bbox": [0, 0, 1, 1],
        }
    )
    doc["annotations"].append({**doc["annotations"][-2], "id": 10**6 + 3, "image_id": 999})
    # ... read as stage 1 imports them: a repeated annotation id, and an image with only a box
    doc["annotations"].append(next(a for a in doc["annotations"] if a["image_id"] == third["id"]))
    doc["images"].append({"id": 10**6 + 8, "file_name": "boxonly.png", "height": 64, "width": 64})
    doc["annotations"].append(
        {
            "id": 10**6 + 4,
            "image_id": 10**6 + 8,
            "category_id": 1,
            "segmentation": [],
            "area": 9,
            "bbox": [1, 1, 3, 3],
            "iscrowd": 0,
        }
    )
    # ... and image entries it cannot use: a name outside the image root, two entries sharing an id
    doc["images"] += [
        {"id": 10**6 + 7, "file_name": "../outside.png", "height": 64, "width": 64},
        {"id": 10**6 + 6, "file_name": "twin-a.png", "height": 64, "width": 64},
        {"id": 10**6 + 6, "file_name": "twin-b.png", "height": 64, "width": 64},
    ]
    source = tmp_path / "edited.json"
    source.write_text(json.dumps(doc))
    (tmp_path / "pictures").symlink_to(scenes / "pictures")
    # Training runs on the one usable image and records every other image and annotation with its reason
    summary = run_stage(train_cfg(make_cfg, source, tmp_path / "run", "train.steps=1"))
    assert summary["images"] == 1 and summary["images_skipped"] == 8 and summary["annotations_skipped"] == 4
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    annotations = {r["annotation"]: r["reason"] for r in rows if "annotation" in r}
    assert annotations.keys() == {str(10**6 + k) for k in (2, 3, 4)} | {str(doc["annotations"][-2]["id"])}
    assert "RLE size [5, 5] differs" in annotations[str(10**6 + 2)]
    assert "image_id 999 is not in 'images'" in annotations[str(10**6 + 3)]
    assert annotations[str(10**6 + 4)].startswith("no segmentation: a box-only")
    assert annotations[str(doc["annotations"][-2]["id"])].startswith("duplicate id")
    reasons = {r["file_name"]: r["reason"] for r in rows if "annotation" not in r}
    assert reasons.keys() == {
        first["file_name"],
        second["file_name"],
        "gone.png",
        "unannotated.png",
        "boxonly.png",
        "../outside.png",
        "twin-a.png",
        "twin-b.png",
    }
    assert reasons["../outside.png"].startswith("path escapes image root")
    assert (
        reasons["twin-a.png"]
        == reasons["twin-b.png"]
        == f"duplicate id: image id {10**6 + 6} appears more than once in 'images'"
    )
    assert reasons["unannotated.png"] == "the source has no mask for it"
    assert reasons["boxonly.png"] == "none of its 1 annotations could be used"
    assert "not a readable image" in reasons[first["file_name"]]
    assert "none of its 1 masks covers 20 px" in reasons[second["file_name"]]
    assert "missing" in reasons["gone.png"] and "train.image_root" in reasons["gone.png"]
    # With no usable image at all, the error names the first thing left out and why
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] not in (third["id"], 999)]
    source.write_text(json.dumps(doc))
    with pytest.raises(TrainDataError, match="first left out: boxonly.png: no segmentation: a box-only"):
        load_sources([str(source)], None, 256)


@pytest.mark.parametrize(
    "text, message", [("not json", "not a readable JSON file"), ('{"images": []}', "not a COCO instances file")]
)
def test_a_coco_source_that_cannot_be_read_says_why(tmp_path, text, message):
    source = tmp_path / "annotations.json"
    source.write_text(text)
    with pytest.raises(InputError, match=message):
        load_sources([str(source)], None, 256)


def test_images_of_a_parquet_source_without_masks_are_recorded(scenes):
    # An output whose images table lists an image its stage failed on (so it has no mask)
    write_shard(
        scenes,
        "extra",
        [],
        [
            {
                "image_id": 99,
                "file_name": "broken.png",
                "height": 8,
                "width": 8,
                "status": "failed",
                "error": "ImageError: not a readable image",
            }
        ],
    )
    examples, skipped = load_sources([str(scenes)], None, 256)
    assert len(examples) == 3
    assert skipped == [{"source": str(scenes), "file_name": "broken.png", "reason": "the source has no mask for it"}]


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.data=[]", "train.data"),
        ("train.data=[/no/such/folder]", "train.data"),
        ("train.init=imagenet", "train.init"),
        ("train.steps=0", "train.steps"),
        ("train.box_prob=1.5", "train.box_prob"),
        ("train.area_power=nan", "train.area_power"),
        ("train.deterministic=sometimes", "train.deterministic"),
        ("train.supervise_all_iou=3", "train.supervise_all_iou"),
        ("train.iou_target=nearest", "train.iou_target"),
        ("train.iou_weight=-1", "train.iou_weight"),
        ("train.freeze_image_encoder=2", "train.freeze_image_encoder"),
    ],
)
def test_bad_settings_fail_before_work(make_cfg, scenes, tmp_path, override, key):
    cfg = train_cfg(make_cfg, scenes, tmp_path / "bad", "train.steps=1", override)
    with pytest.raises(ConfigError, match=key):
        run_stage(cfg)
    assert not (tmp_path / "bad").exists()


def test_area_power_sets_how_often_small_masks_are_drawn(make_cfg, scenes, tmp_path):
    """One 4-px mask and one of 1024 px, one mask drawn per image: uniform at 0, the small one about 4
    times in 5 at -0.25 (weights 4 ** -0.25 against 1024 ** -0.25), the large one at +0.25."""
    size = 64
    small, large = np.zeros((size, size), bool), np.zeros((size, size), bool)
    small[:2, :2] = True
    large[32:, 32:] = True
    example = {
        "image": torch.zeros(3, size, size, dtype=torch.uint8),
        "masks": rle.encode(np.stack([small, large])),
        "areas": np.array([4.0, 1024.0]),
    }

    def small_share(power):
        rng = np.random.default_rng(0)
        draws = [batch([example], rng, 1, 1, size, power)[1][0][0].sum() == 4 for _ in range(2000)]
        return float(np.mean(draws))

    assert abs(small_share(0.0) - 0.5) < 0.05
    assert abs(small_share(-0.25) - 0.8) < 0.05
    assert abs(small_share(0.25) - 0.2) < 0.05
    cfg = train_cfg(make_cfg, scenes, tmp_path / "out", "train.area_power=-0.25")
    assert parse(Train, cfg["train"], "train").area_power == -0.25  # negative powers are a valid setting


def test_prompts_are_simulated_from_the_masks():
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:20, 30:50] = True
    masks[1, 40:60, 5:15] = True
    generator = torch.Generator().manual_seed(0)
    points = T.sample_points(masks, generator).long()
    assert all(masks[k, y, x] for k, (x, y) in enumerate(points.tolist()))
    boxes = T.noisy_boxes(masks, generator, max_noise=0.0)
    assert boxes.tolist() == [[30, 10, 49, 19], [5, 40, 14, 59]]
    jittered = T.noisy_boxes(masks, generator, max_noise=2.0)
    assert (jittered - boxes).abs().max() <= 2.0 and not torch.equal(jittered, boxes)
    # A correction click lands in the error region: positive on a missed pixel, negative on a false one
    previous = torch.zeros_like(masks)
    previous[1] = masks[1]
    previous[1, 0:5, 0:5] = True  # false positives only
    coords, labels = T.add_click(torch.zeros(2, 1, 2), torch.ones(2, 1), previous, masks, generator)
    (x0, y0), (x1, y1) = coords[:, 1].long().tolist()
    assert masks[0, y0, x0] and labels[0, 1] == 1
    assert not masks[1, y1, x1] and previous[1, y1, x1] and labels[1, 1] == 0


def test_loss_is_zero_only_for_perfect_logits():
    target = torch.zeros(1, 32, 32, dtype=torch.bool)
    target[0, 8:24, 8:24] = True
    perfect = torch.where(target, 30.0, -30.0)[:, None].expand(1, 3, 32, 32)
    mask_l, _, true_iou, _, _ = T.output_losses(perfect, torch.ones(1, 3), target, RECIPE["weights"])
    assert mask_l.max() < 1e-3 and torch.equal(true_iou, torch.ones(1, 3))
    wrong, _, wrong_iou, _, _ = T.output_losses(-perfect, torch.ones(1, 3), target, RECIPE["weights"])
    assert wrong.min() > 1.0 and wrong_iou.max() == 0


def test_partial_init_copies_the_fitting_tensors_of_a_checkpoint(make_cfg, scenes, tmp_path):
    # A checkpoint without the encoder's ViT blocks (as when blocks are added): everything else is copied
    source = seeded_sam("tiny", 7).state_dict()
    older = {k: v for k, v in source.items() if ".blocks." not in k}
    path = tmp_path / "older.pt"
    torch.save(older, path)
    cfg = train_cfg(make_cfg, scenes, tmp_path / "grown", "train.init=partial", f"model.checkpoint={path}")
    sam = train_stage.initial_model(cfg, parse(Train, cfg["train"], "train"), "cpu")
    state = sam.state_dict()
    assert all(torch.equal(state[k], v) for k, v in older.items())
    block = next(k for k in state if ".blocks." in k and k.endswith("qkv.weight"))
    assert not torch.equal(state[block], source[block])  # seeded with train's seed, not copied


def test_partial_init_without_a_checkpoint_says_what_to_pass(make_cfg, scenes, tmp_path):
    cfg = train_cfg(make_cfg, scenes, tmp_path / "grown", "train.init=partial")
    with pytest.raises(ConfigError, match="model.checkpoint=PATH"):
        train_stage.initial_model(cfg, parse(Train, cfg["train"], "train"), "cpu")
