"""The exact fast paths give the old path's output bit for bit: the shared-image decoder against
segment_anything's MaskDecoder (torch.equal on logits), and whole generator runs against the generator
calling the model's own decoder."""

import math
from types import SimpleNamespace

import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from data_engine.amg.decoder import SharedImageDecoder, batch_bounds, supports
from data_engine.amg.generator import MaskGenerator
from data_engine.model.build import build_sam
from data_engine.synth.scenes import make_scene


class Opaque(torch.nn.Module):
    """Hides the decoder's type: the generator then calls the model's own decoder (the old path)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, **kwargs):
        return self.decoder(**kwargs)


@pytest.fixture(scope="module")
def tiny():
    return build_sam("tiny", device="cpu")


def vit_b_prompt_side():
    """vit_b's prompt encoder and mask decoder (seeded), without its 90M-parameter image encoder."""
    torch.manual_seed(0)
    decoder = MaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=3,
    )
    prompt = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    return SimpleNamespace(
        mask_decoder=decoder.eval(), prompt_encoder=prompt.eval(), image_encoder=SimpleNamespace(img_size=1024)
    )


def prompts(sam, n, seed=0):
    size = sam.image_encoder.img_size
    points = torch.rand(n, 1, 2, generator=torch.Generator().manual_seed(seed)) * size
    return sam.prompt_encoder(points=(points, torch.ones(n, 1, dtype=torch.int)), boxes=None, masks=None)


@pytest.mark.parametrize("variant", ["tiny", "vit_b_small"])
def test_shared_decoder_logits_are_bit_identical(variant, tiny, one_thread):
    if variant == "tiny":
        sam = tiny
        embedding = sam.image_encoder(torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)))[0]
    else:  # vit_b's decoder on a random embedding (its encoder is not needed to check the decoder)
        sam = vit_b_prompt_side()
        embedding = torch.randn(256, 64, 64, generator=torch.Generator().manual_seed(1))
    assert supports(sam.mask_decoder)
    with torch.no_grad():
        sparse, dense = prompts(sam, 16)
        pe = sam.prompt_encoder.get_dense_pe()
        ref_masks, ref_iou = sam.mask_decoder.predict_masks(embedding[None], pe, sparse, dense)
        shared = SharedImageDecoder(sam.mask_decoder, embedding, pe, dense[:1])
        masks, iou, rows = shared(sparse)
        assert torch.equal(masks, ref_masks) and torch.equal(iou, ref_iou) and torch.equal(rows, torch.arange(16))
        # Skipping prompts: the others' logits do not change by a bit
        keep = torch.zeros(16, dtype=torch.bool)
        keep[[0, 5, 6, 15]] = True
        masks, iou, rows = shared(sparse, lambda _: keep)
        assert rows.tolist() == [0, 5, 6, 15]
        assert torch.equal(masks, ref_masks[rows]) and torch.equal(iou, ref_iou)
        # The transformer and upscaling in batches of 3 or 5: same bits (the heads see all 16 rows)
        for batch in (3, 5):
            masks, iou, rows = shared(sparse, lambda _: keep, batch)
            assert torch.equal(masks, ref_masks[rows]) and torch.equal(iou, ref_iou)
        masks, _, rows = shared(sparse, lambda iou: torch.zeros(len(iou), dtype=torch.bool))
        assert masks.shape == (0, *ref_masks.shape[1:]) and len(rows) == 0


def test_batch_bounds_never_leave_a_small_remainder():
    assert batch_bounds(64, 16) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert batch_bounds(100, 16)[-1] == (80, 100)
    assert batch_bounds(10, 16) == [(0, 10)]
    assert batch_bounds(0, 16) == []


def same(a: dict, b: dict) -> bool:
    """Equal outputs, NaN equal to NaN (an empty mask's stability score is 0/0)."""
    eq = lambda x, y: x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))  # noqa: E731
    return a.keys() == b.keys() and all(len(a[k]) == len(b[k]) and all(map(eq, a[k], b[k])) for k in a)


@pytest.mark.parametrize(
    "overrides",
    [
        # SA-1B's filters (tiny's IoU threshold, so that there are masks) with a crop layer
        ["amg=tiny", "amg.points_per_side=6", "amg.crop_n_layers=1", "amg.crop_n_points_downscale_factor=1"],
        # Every candidate through every filter: prompts are never skipped, and all decoder batches are used
        ["amg=reference", "amg.points_per_side=7", "amg.pred_iou_thresh=0", "amg.stability_score_thresh=0"],
    ],
)
def test_generator_fast_paths_match_the_old_path(tiny, make_cfg, overrides, one_thread):
    amg = make_cfg(*overrides, small=False)["amg"]
    old = build_sam("tiny", device="cpu")
    old.mask_decoder = Opaque(old.mask_decoder)
    assert not supports(old.mask_decoder)
    for index in range(2):
        image = make_scene(5, index, 160, 224)["image"]
        expected = MaskGenerator(old, **amg).generate(image)
        assert len(expected["segmentation"]) > 0
        for decoder_batch in (None, 3, 32):
            out = MaskGenerator(tiny, **{**amg, "decoder_batch": decoder_batch}).generate(image)
            assert same(out, expected), (overrides, index, decoder_batch)
