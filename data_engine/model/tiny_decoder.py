"""The tiny model's high-resolution path: sharp mask edges from the encoder's stride-2 and stride-4 features.

SAM's decoder draws masks by upscaling a 1/patch-size image embedding; a small encoder cannot carry
every edge in that grid. As SAM 2 does, stride-2 and stride-4 image features (from the convolution
stages of model/tiny_encoder.py) are added to the decoder's two upscaling steps. They travel inside
the image embedding: pixel-unshuffled to the embedding's grid and appended as extra channels. So
SamPredictor, the generator's embedding batches and the training code carry them without knowing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder


def pack(embedding: torch.Tensor, stride4: torch.Tensor, stride2: torch.Tensor, patch: int) -> torch.Tensor:
    """Embedding [B, D, h, w] (h = S / patch for an S-px image), stride-4 map [B, D/4, S/4, S/4] and
    stride-2 map [B, D/8, S/2, S/2] -> [B, D + D/4 (patch/4)^2 + D/8 (patch/2)^2, h, w] (4D for patch 8):
    the two maps pixel-unshuffled onto the embedding's grid and appended as channels."""
    return torch.cat([embedding, F.pixel_unshuffle(stride4, patch // 4), F.pixel_unshuffle(stride2, patch // 2)], 1)


class HighResMaskDecoder(MaskDecoder):
    """SAM's mask decoder reading the packed embedding: the high-res features join the upscaling."""

    def __init__(self, *, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.patch = patch_size

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, 4D, h, w] -> embedding [B, D, h, w], stride-4 [B, D/4, 2h.., ], stride-2 [B, D/8, ...]."""
        d = self.transformer_dim
        embedding, f1, f0 = torch.split(
            packed, [d, d // 4 * (self.patch // 4) ** 2, d // 8 * (self.patch // 2) ** 2], 1
        )
        return embedding, F.pixel_shuffle(f1, self.patch // 4), F.pixel_shuffle(f0, self.patch // 2)

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        embedding, f1, f0 = self.unpack(image_embeddings)
        # Output tokens (IoU, masks) then the prompt tokens, one row per prompt
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(n, -1, -1), sparse_prompt_embeddings], dim=1)
        # Two-way transformer over the image embedding repeated per prompt
        src = torch.repeat_interleave(embedding, n, dim=0) + dense_prompt_embeddings
        pos = torch.repeat_interleave(image_pe, n, dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        # Upscale with the high-res features added at stride 4 and stride 2 (broadcast over prompts)
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = act1(norm1(deconv1(src) + f1))
        upscaled = act2(deconv2(upscaled) + f0)
        # Each mask token's hypernetwork weights dotted with the upscaled features
        hyper = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.flatten(2)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(hs[:, 0])
