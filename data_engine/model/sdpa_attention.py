"""segment_anything's image-encoder attention through PyTorch's scaled_dot_product_attention.

The ViT blocks' Attention adds a decomposed relative-position bias to the attention logits
(add_decomposed_rel_pos); scaled_dot_product_attention takes it as an additive attn_mask, so fused
kernels (flash / memory-efficient on a GPU) do the softmax and the product. Same function, other
rounding: equal to float tolerance, not bit for bit (tests/test_fast_preset.py).
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


def sdpa_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """Attention.forward with scaled_dot_product_attention; x [B, H, W, C] -> [B, H, W, C]."""
    b, h, w, _ = x.shape
    # q, k, v: [B, heads, HW, C/heads]
    q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    bias = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
    x = x.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(x)


def rel_pos_bias(q: torch.Tensor, rel_pos_h, rel_pos_w, size: tuple[int, int]) -> torch.Tensor:
    """add_decomposed_rel_pos's bias as a tensor: q [B, heads, HW, C] -> [B, heads, HW, HW]."""
    h, w = size
    b, heads, _, c = q.shape
    r_q = q.reshape(b, heads, h, w, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, rel_pos_h).to(q.dtype))  # [B, n, h, w, kh]
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, rel_pos_w).to(q.dtype))  # [B, n, h, w, kw]
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, h * w, h * w)


def with_sdpa(encoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of `encoder` sharing its weights whose Attention layers use sdpa_forward (the model itself
    is left as it is, so exact and fast generators can share it)."""
    shared = {id(t): t for t in [*encoder.parameters(), *encoder.buffers()]}
    fast = copy.deepcopy(encoder, memo=shared)
    for module in fast.modules():
        if isinstance(module, Attention):
            module.forward = types.MethodType(sdpa_forward, module)
    return fast
