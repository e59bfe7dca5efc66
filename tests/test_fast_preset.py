"""amg=sa1b_fast: each piece is a setting that reaches its code path, the SDPA attention computes
segment_anything's attention, and the agreement figures are what they say."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from data_engine.amg import decoder as decoder_module
from data_engine.amg.agreement import agreement
from data_engine.amg.generator import MaskGenerator
from data_engine.config import check_amg
from data_engine.io import rle
from data_engine.model import sdpa_attention
from data_engine.model.build import build_sam
from data_engine.synth.scenes import make_scene


@pytest.fixture(scope="module")
def tiny():
    return build_sam("tiny", device="cpu")


@pytest.mark.parametrize("size,window", [((14, 14), True), ((20, 24), False)])
def test_sdpa_attention_matches_segment_anything(size, window):
    """vit_b's attention width (768, 12 heads) with random relative-position tables, a window and a
    non-square grid (its global layers' shape, smaller)."""
    torch.manual_seed(0)
    attn = Attention(768, num_heads=12, use_rel_pos=True, input_size=size).eval()
    torch.nn.init.normal_(attn.rel_pos_h, std=0.5)
    torch.nn.init.normal_(attn.rel_pos_w, std=0.5)
    x = torch.randn(2, *size, 768)
    with torch.no_grad():
        expected, got = attn(x), sdpa_attention.sdpa_forward(attn, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.equal(attn.rel_pos_h, torch.zeros_like(attn.rel_pos_h))


def test_with_sdpa_shares_weights_and_leaves_the_model_alone(tiny):
    fast = sdpa_attention.with_sdpa(tiny.image_encoder)
    assert fast.blocks[0].attn.qkv.weight is tiny.image_encoder.blocks[0].attn.qkv.weight
    assert "forward" not in vars(tiny.image_encoder.blocks[0].attn)
    image = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fast(image), tiny.image_encoder(image), rtol=1e-4, atol=1e-4)


def test_fast_preset_composes_and_validates(make_cfg):
    amg = make_cfg("amg=sa1b_fast", small=False)["amg"]
    check_amg(amg)
    assert amg["bf16_autocast"] and amg["sdpa_attention"] and amg["points_per_batch"] >= 1024
    assert amg["images_per_batch"] > 1 and amg["host_threads"] > 0 and amg["decode_crops_together"]
    exact = make_cfg("amg=sa1b", small=False)["amg"]
    assert not exact["bf16_autocast"] and not exact["sdpa_attention"] and not exact["compile_encoder"]
    assert exact["images_per_batch"] == 1 and exact["host_threads"] == 0 and not exact["decode_crops_together"]


def scene():
    return make_scene(11, 0, 128, 160)["image"]


def test_sdpa_setting_runs_the_sdpa_attention(tiny, monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        sdpa_attention,
        "F",
        SimpleNamespace(scaled_dot_product_attention=lambda *a, **k: calls.append(1) or real(*a, **k)),
    )
    MaskGenerator(tiny, points_per_side=4, crop_n_layers=0).generate(scene())
    assert calls == []
    MaskGenerator(tiny, points_per_side=4, crop_n_layers=0, sdpa_attention=True).generate(scene())
    assert len(calls) == len(tiny.image_encoder.blocks)


def test_bf16_setting_runs_the_model_in_bfloat16(tiny):
    dtypes = []
    hooks = [
        tiny.image_encoder.blocks[0].attn.register_forward_hook(lambda m, i, o: dtypes.append(("encoder", o.dtype))),
        tiny.mask_decoder.transformer.layers[1].cross_attn_token_to_image.register_forward_hook(
            lambda m, i, o: dtypes.append(("decoder", o.dtype))
        ),
    ]
    try:
        out = MaskGenerator(tiny, points_per_side=4, crop_n_layers=0, pred_iou_thresh=0, bf16_autocast=True).generate(
            scene()
        )
        assert {("encoder", torch.bfloat16), ("decoder", torch.bfloat16)} == set(dtypes)
        assert len(out["segmentation"]) > 0 and all(isinstance(v, float) for v in out["predicted_iou"])
        dtypes.clear()
        MaskGenerator(tiny, points_per_side=4, crop_n_layers=0).generate(scene())
        assert {d for _, d in dtypes} == {torch.float32}
    finally:
        for h in hooks:
            h.remove()


def test_compile_setting_compiles_the_encoder(tiny, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    gen = MaskGenerator(tiny, compile_encoder=True, sdpa_attention=True)
    assert len(compiled) == 1 and gen.encoder is compiled[0] and compiled[0] is not tiny.image_encoder
    MaskGenerator(tiny)
    assert len(compiled) == 1


@pytest.mark.parametrize("decoder_batch,calls", [(256, [64]), (16, [16, 16, 16, 16])])
def test_all_points_of_a_crop_decoded_together_up_to_the_cap(tiny, monkeypatch, decoder_batch, calls):
    sizes = []
    real = decoder_module.SharedImageDecoder.transformer
    monkeypatch.setattr(
        decoder_module.SharedImageDecoder,
        "transformer",
        lambda self, tokens, crops: sizes.append(len(tokens)) or real(self, tokens, crops),
    )
    gen = MaskGenerator(tiny, points_per_side=8, crop_n_layers=0, points_per_batch=1024, decoder_batch=decoder_batch)
    gen.generate(scene())
    assert sizes == calls


def test_the_crops_of_an_encoder_batch_are_decoded_together(tiny, monkeypatch, one_thread):
    calls = []
    real = decoder_module.SharedImageDecoder.transformer
    monkeypatch.setattr(
        decoder_module.SharedImageDecoder,
        "transformer",
        lambda self, tokens, crops: (
            calls.append(None if crops is None else crops.tolist()) or real(self, tokens, crops)
        ),
    )
    settings = dict(points_per_side=8, crop_n_layers=1, points_per_batch=1024, decoder_batch=256, crops_per_batch=4)
    settings.update(pred_iou_thresh=0.5, stability_score_thresh=0.5)
    image = scene()
    alone = MaskGenerator(tiny, **settings).generate(image)
    assert calls == [None] * 5  # the whole image, then 4 crops one by one
    calls.clear()
    together = MaskGenerator(tiny, decode_crops_together=True, **settings).generate(image)
    # The whole image alone; the 4 crops of layer 1 (4x4 points each) in one call, each prompt with its crop
    assert calls == [None, [c for c in range(4) for _ in range(16)]]
    figures = agreement([(alone["segmentation"], together["segmentation"], *image.shape[:2])])
    assert figures["mean_matched_iou"] > 0.99 and figures["only_a"] == figures["only_b"] == 0
    assert len(together["segmentation"]) > 0 and sorted(map(tuple, together["crop_box"])) == sorted(
        map(tuple, alone["crop_box"])
    )


def squares(height, width, boxes) -> list[str]:
    masks = np.zeros((len(boxes), height, width), bool)
    for m, (y0, x0, y1, x1) in zip(masks, boxes):
        m[y0:y1, x0:x1] = True
    return rle.encode(masks)


def test_agreement_figures_on_constructed_masks():
    # Image 1: A has three masks; B has the first exactly, the second shifted by 2 of 10 columns
    # (IoU 80 / 120), and a mask unlike any of A's; A's third mask is unmatched
    a1 = squares(40, 40, [(0, 0, 10, 10), (20, 0, 30, 10), (30, 30, 40, 40)])
    b1 = squares(40, 40, [(20, 2, 30, 12), (0, 0, 10, 10), (0, 30, 5, 35)])
    # Image 2: identical, same count
    a2 = squares(20, 20, [(0, 0, 5, 5)])
    figures = agreement([(a1, b1, 40, 40), (a2, list(a2), 20, 20)])
    assert figures["matched"] == 3
    assert figures["mean_matched_iou"] == pytest.approx((1 + 80 / 120 + 1) / 3)
    assert figures["only_a"] == 1 and figures["only_b"] == 1
    assert figures["count_differs"] == 0.0
    figures = agreement([(a1, b1[:2], 40, 40), (a2, a2, 20, 20)])
    assert figures["count_differs"] == 0.5 and figures["only_b"] == 0


def test_exact_settings_do_not_touch_the_fast_paths(tiny):
    """amg=sa1b's defaults: the plain encoder, float32, no compile."""
    gen = MaskGenerator(tiny)
    assert gen.encoder is tiny.image_encoder and not gen.bf16_autocast and gen.host_pool is None
