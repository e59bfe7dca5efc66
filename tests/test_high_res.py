"""The tiny model's encoder: convolution stages and ViT blocks, stride-2 and stride-4 features packed
through the embedding and used by the decoder."""
import numpy as np
import torch
from segment_anything import SamPredictor

from data_engine import models
from data_engine.high_res import HighResMaskDecoder, pack
from data_engine.hybrid import HybridEncoder


def point_logits(sam, image: np.ndarray) -> np.ndarray:
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    _, _, low_res = predictor.predict(point_coords=np.array([[40.0, 50.0]]), point_labels=np.array([1]))
    return low_res


def test_tiny_carries_stride_2_and_4_features_in_its_embedding():
    sam = models.seeded_sam("tiny").eval()
    assert isinstance(sam.image_encoder, HybridEncoder) and isinstance(sam.mask_decoder, HighResMaskDecoder)
    d = models.ARCHS["tiny"]["prompt_dim"]
    with torch.no_grad():
        packed = sam.image_encoder(torch.zeros(1, 3, 256, 256))
        embedding, f1, f0 = sam.mask_decoder.unpack(packed)
    assert packed.shape == (1, 4 * d, 32, 32)
    assert embedding.shape == (1, d, 32, 32)
    assert f1.shape == (1, d // 4, 64, 64) and f0.shape == (1, d // 8, 128, 128)


def test_unpack_inverts_the_encoder_packing():
    sam = models.seeded_sam("tiny")
    d = models.ARCHS["tiny"]["prompt_dim"]
    embedding, s1, s0 = torch.randn(1, d, 32, 32), torch.randn(1, d // 4, 64, 64), torch.randn(1, d // 8, 128, 128)
    e, f1, f0 = sam.mask_decoder.unpack(pack(embedding, s1, s0, patch=8))
    assert torch.equal(e, embedding) and torch.equal(f1, s1) and torch.equal(f0, s0)


def test_the_stride_2_features_shape_the_masks():
    sam = models.seeded_sam("tiny").eval()
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        before = point_logits(sam, image)
        torch.nn.init.zeros_(sam.image_encoder.proj_s0.weight)
        torch.nn.init.zeros_(sam.image_encoder.proj_s0.bias)
        after = point_logits(sam, image)
    assert before.shape == after.shape == (3, 128, 128)
    assert not np.allclose(before, after, atol=1e-3)


def test_a_model_grown_with_the_mask_score_branch_predicts_as_before():
    # tiny_ms is tiny plus a zero-initialised correction: the tiny weights give the same masks and scores
    tiny = models.seeded_sam("tiny", 3).eval()
    grown = models.seeded_sam("tiny_ms", 0).eval()
    missing, unexpected = grown.load_state_dict(tiny.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith("mask_decoder.mask_score.") for k in missing)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    scores = []
    for sam in (tiny, grown):
        predictor = SamPredictor(sam)
        predictor.set_image(image)
        scores.append(predictor.predict(point_coords=np.array([[40.0, 50.0]]), point_labels=np.array([1]))[1:])
    assert np.array_equal(scores[0][0], scores[1][0]) and np.array_equal(scores[0][1], scores[1][1])
    # Once its last layer is not zero, the scores move and the masks do not
    torch.nn.init.normal_(grown.mask_decoder.mask_score.mlp[-1].weight)
    predictor = SamPredictor(grown)
    predictor.set_image(image)
    _, moved, low_res = predictor.predict(point_coords=np.array([[40.0, 50.0]]), point_labels=np.array([1]))
    assert not np.allclose(moved, scores[0][0]) and np.array_equal(low_res, scores[0][1])


def test_mask_features_see_the_mask():
    from data_engine.mask_score import EXTRA, mask_features
    up = torch.zeros(1, 2, 8, 8)
    up[0, 0, :, :4] = 1.0  # channel 0 lights the left half
    left = torch.full((1, 1, 8, 8), -20.0)
    left[..., :4] = 20.0
    f = mask_features(torch.cat([left, -left], 1), up, torch.tensor([[0.5, 0.5]]))
    assert f.shape == (1, 2, 2 * 2 + EXTRA)
    inside, outside, area = f[0, :, 0], f[0, :, 2], f[0, :, 4]
    assert inside[0] > 0.9 and outside[0] < 0.1 and inside[1] < 0.1 and outside[1] > 0.9
    assert torch.allclose(area, torch.tensor([0.5, 0.5]), atol=1e-3)
