"""The tiny model's encoder: convolution stages and ViT blocks, stride-2 and stride-4 features packed
through the embedding and used by the decoder."""

import numpy as np
import torch
from segment_anything import SamPredictor

from data_engine.model import build as models
from data_engine.model.tiny_decoder import HighResMaskDecoder, pack
from data_engine.model.tiny_encoder import HybridEncoder


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
