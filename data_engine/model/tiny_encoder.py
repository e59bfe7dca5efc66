"""A convolutional + ViT image encoder for small SAMs trained from scratch on a CPU.

Three stride-2 convolution stages (with residual blocks) turn the image into stride-2, stride-4 and
stride-8 feature maps; SAM's ViT blocks (windowed and global attention, relative positions) run on
the stride-8 grid, and SAM's neck projects them to the prompt dimension. The stride-2 and stride-4
maps feed the mask decoder's upscaling (the high-resolution path of `tiny_decoder.py`), packed into the
embedding, so `HighResMaskDecoder`, SamPredictor and the generator use it unchanged. On the
synthetic scenes it learns far faster per CPU-minute than a ViT with a patch embedding.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import Block
from torch import nn

from data_engine.model.tiny_decoder import pack

PATCH = 8  # three stride-2 stages


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(channels, channels, 3, 1, 1), group_norm(channels)
        self.conv2, self.norm2 = nn.Conv2d(channels, channels, 3, 1, 1), group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.norm1(self.conv1(x)))
        return F.gelu(x + self.norm2(self.conv2(y)))


def stage(c_in: int, c_out: int, blocks: int) -> nn.Sequential:
    """A stride-2 convolution, then `blocks` residual blocks."""
    down = [nn.Conv2d(c_in, c_out, 3, 2, 1), group_norm(c_out), nn.GELU()]
    return nn.Sequential(*down, *[ResBlock(c_out) for _ in range(blocks)])


class HybridEncoder(nn.Module):
    """Image [B, 3, S, S] -> packed embedding [B, 4 * out_chans, S/8, S/8] (see high_res.pack)."""

    def __init__(
        self,
        *,
        img_size: int,
        conv_widths: tuple,
        conv_blocks: tuple,
        embed_dim: int,
        depth: int,
        num_heads: int,
        global_attn_indexes: tuple,
        window_size: int,
        out_chans: int,
    ):
        super().__init__()
        self.img_size = img_size
        w2, w4, w8 = conv_widths
        self.s2 = stage(3, w2, conv_blocks[0])
        self.s4 = stage(w2, w4, conv_blocks[1])
        self.s8 = stage(w4, w8, conv_blocks[2])
        grid = img_size // PATCH
        self.to_tokens = nn.Conv2d(w8, embed_dim, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=4,
                qkv_bias=True,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.proj_s1 = nn.Conv2d(w4, out_chans // 4, 1)  # stride-4 features for the decoder
        self.proj_s0 = nn.Conv2d(w2, out_chans // 8, 1)  # stride-2 features for the decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Convolution stages at strides 2, 4, 8
        f2 = self.s2(x)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        # ViT blocks on the stride-8 grid, then SAM's neck
        tokens = self.to_tokens(f8).permute(0, 2, 3, 1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        embedding = self.neck(tokens.permute(0, 3, 1, 2))
        return pack(embedding, self.proj_s1(f4), self.proj_s0(f2), PATCH)
