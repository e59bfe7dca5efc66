"""The tiny model's high-resolution path: packed through the embedding, zero at start, used by the decoder."""
import numpy as np
import torch
from segment_anything import SamPredictor

from data_engine import models
from data_engine.high_res import HighResEncoderViT, HighResMaskDecoder


def plain_tiny(seed: int = 3):
    """The tiny architecture without the high-res path (the embedded model's earlier form)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.make_sam(**dict(models.ARCHS["tiny"], stem_dim=0)).eval()


def point_logits(sam, image: np.ndarray) -> np.ndarray:
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    _, _, low_res = predictor.predict(point_coords=np.array([[40.0, 50.0]]), point_labels=np.array([1]))
    return low_res


def test_tiny_carries_stride_2_and_4_features_in_its_embedding():
    sam = models.seeded_sam("tiny").eval()
    assert isinstance(sam.image_encoder, HighResEncoderViT) and isinstance(sam.mask_decoder, HighResMaskDecoder)
    d = models.ARCHS["tiny"]["prompt_dim"]
    with torch.no_grad():
        packed = sam.image_encoder(torch.zeros(1, 3, 256, 256))
        embedding, f1, f0 = sam.mask_decoder.unpack(packed)
    assert packed.shape == (1, 4 * d, 32, 32)
    assert embedding.shape == (1, d, 32, 32)
    assert f1.shape == (1, d // 4, 64, 64) and f0.shape == (1, d // 8, 128, 128)


def test_unpack_inverts_the_encoder_packing():
    sam = models.seeded_sam("tiny")
    encoder = sam.image_encoder
    s0 = torch.randn(1, encoder.proj_s0.out_channels, 128, 128)
    s1 = torch.randn(1, encoder.proj_s1.out_channels, 64, 64)
    packed = torch.cat([torch.zeros(1, 64, 32, 32), torch.nn.functional.pixel_unshuffle(s1, 2),
                        torch.nn.functional.pixel_unshuffle(s0, 4)], 1)
    _, f1, f0 = sam.mask_decoder.unpack(packed)
    assert torch.equal(f1, s1) and torch.equal(f0, s0)


def test_grown_from_a_plain_checkpoint_it_predicts_what_that_checkpoint_did():
    plain = plain_tiny()
    grown = models.seeded_sam("tiny").eval()
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".stem_" in k or ".proj_" in k for k in missing)
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        assert np.allclose(point_logits(grown, image), point_logits(plain, image), atol=1e-5)
        # Once the projections are non-zero, the high-res features change the masks
        torch.nn.init.normal_(grown.image_encoder.proj_s0.weight)
        assert not np.allclose(point_logits(grown, image), point_logits(plain, image), atol=1e-3)
