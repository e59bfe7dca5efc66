"""SAM's mask decoder for many point prompts on one image embedding, without the work that repeats.

segment_anything's MaskDecoder copies the image embedding once per prompt and runs the whole two-way
transformer and the upscaling on every copy. Two parts of that work do not depend on the prompt, or
are not needed:
- in the first two-way layer the image side (image embedding + dense prompt, its key, value and query
  projections) is the same for every prompt: it is computed once per image embedding;
- later layers add the image's positional encoding to the same keys twice: once here;
- the predicted-IoU head reads only the IoU token, so prompts none of whose masks can pass the
  predicted-IoU filter skip the upscaling and the hypernetwork product.
The arithmetic is segment_anything's, op for op in the same order, so the logits are bit-identical
(tests/test_generator_fast_paths.py checks that with torch.equal).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer

from data_engine.model.tiny_decoder import HighResMaskDecoder


def supports(decoder: torch.nn.Module) -> bool:
    """Whether `decoder` is one whose arithmetic this module reproduces (else: call the module itself)."""
    return type(decoder) in (MaskDecoder, HighResMaskDecoder) and type(decoder.transformer) is TwoWayTransformer


class SharedImageDecoder:
    """The decoder bound to image embeddings: the prompt-independent work is done here, once per crop."""

    def __init__(self, decoder: MaskDecoder, embedding: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor):
        """embedding [D', h, w] (the encoder's output for one crop) or [C, D', h, w] (C crops, whose prompts
        then say which crop they belong to), image_pe [1, D, h, w], dense [1, D, h, w]."""
        self.decoder = decoder
        embedding = embedding[None] if embedding.dim() == 3 else embedding
        self.high_res = None
        if isinstance(decoder, HighResMaskDecoder):
            embedding, f1, f0 = decoder.unpack(embedding)
            self.high_res = (f1, f0)
        first = decoder.transformer.layers[0]
        # Image tokens as the transformer sees them: [C, HW, D]
        src = embedding + dense
        self.shape = src.shape
        self.keys = src.flatten(2).permute(0, 2, 1)
        self.key_pe = image_pe.flatten(2).permute(0, 2, 1)
        # First layer, image side: the key and value of token->image attention, the query of image->token
        k = self.keys + self.key_pe
        self.first_k = first.cross_attn_token_to_image.k_proj(k)
        self.first_v = first.cross_attn_token_to_image.v_proj(self.keys)
        self.first_q = first.cross_attn_image_to_token.q_proj(k)

    def __call__(
        self,
        sparse: torch.Tensor,
        keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch: int = 0,
        crops: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """sparse prompt embeddings [B, T, D] -> (low-res logits [K, 4, H, W] of the prompts kept,
        predicted IoU [B, 4] of all prompts, indices [K] of the kept prompts). `keep` maps the predicted
        IoU [B, 4] to the prompts [B] bool worth upscaling (None: all). The transformer and the upscaling
        run `batch` prompts at a time (0: all); the heads run on all B prompts together, as in
        segment_anything: small matrix products round differently on fewer rows (BLAS picks another kernel).
        With several crops, `crops` [B] is each prompt's crop (its image side is then copied per prompt, as
        segment_anything does; with one crop it is shared)."""
        d = self.decoder
        # Output tokens (IoU, masks) then the prompt tokens, one row per prompt
        output_tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        bounds = batch_bounds(len(tokens), batch or len(tokens))
        queries, keys = (
            torch.cat(p) for p in zip(*[self.transformer(tokens[i:j], part(crops, i, j)) for i, j in bounds])
        )
        # Hypernetwork weights of the mask tokens, predicted IoU from the IoU token
        mask_tokens = queries[:, 1 : 1 + d.num_mask_tokens, :]
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(d.output_hypernetworks_mlps)], dim=1)
        iou_pred = d.iou_prediction_head(queries[:, 0, :])
        rows = torch.arange(len(tokens), device=tokens.device)
        if keep is not None:
            rows = rows[keep(iou_pred)]
            hyper, keys = hyper[rows], keys[rows]
            crops = None if crops is None else crops[rows]
        if len(rows) == 0:
            _, _, h, w = self.shape  # two stride-2 upscalings
            return keys.new_zeros(0, d.num_mask_tokens, 4 * h, 4 * w), iou_pred, rows
        bounds = batch_bounds(len(rows), batch or len(rows))
        return torch.cat([self.upscale(hyper[i:j], keys[i:j], part(crops, i, j)) for i, j in bounds]), iou_pred, rows

    def transformer(self, tokens: torch.Tensor, crops: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """segment_anything's TwoWayTransformer.forward, with the first layer's image side shared."""
        t = self.decoder.transformer
        queries, keys = self.first_layer(tokens, crops)
        for layer in t.layers[1:]:
            queries, keys = self.layer(layer, queries, keys, tokens)
        q = queries + tokens
        k = keys + self.key_pe
        attn_out = t.final_attn_token_to_image(q=q, k=k, v=keys)
        queries = queries + attn_out
        queries = t.norm_final_attn(queries)
        return queries, keys

    def first_layer(self, tokens: torch.Tensor, crops: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """TwoWayAttentionBlock.forward (skip_first_layer_pe) with the precomputed image projections."""
        layer = self.decoder.transformer.layers[0]
        image_keys, first_k, first_v, first_q = (
            t if crops is None else t[crops] for t in (self.keys, self.first_k, self.first_v, self.first_q)
        )
        # Self attention block (no positional encoding in the first layer)
        queries = layer.self_attn(q=tokens, k=tokens, v=tokens)
        queries = layer.norm1(queries)
        # Cross attention block, tokens attending to the image embedding
        m = layer.cross_attn_token_to_image
        attn_out = attend(m, m.q_proj(queries + tokens), first_k, first_v)
        queries = queries + attn_out
        queries = layer.norm2(queries)
        # MLP block
        queries = queries + layer.mlp(queries)
        queries = layer.norm3(queries)
        # Cross attention block, image embedding attending to the tokens
        m = layer.cross_attn_image_to_token
        q = queries + tokens
        attn_out = attend(m, first_q, m.k_proj(q), m.v_proj(queries))
        keys = image_keys + attn_out
        keys = layer.norm4(keys)
        return queries, keys

    def layer(self, layer, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor):
        """TwoWayAttentionBlock.forward (with positional encodings), the image side's keys + positional
        encoding computed once: segment_anything computes the same sum twice."""
        # Self attention block
        q = queries + query_pe
        attn_out = layer.self_attn(q=q, k=q, v=queries)
        queries = queries + attn_out
        queries = layer.norm1(queries)
        # Cross attention block, tokens attending to the image embedding
        q = queries + query_pe
        k = keys + self.key_pe
        attn_out = layer.cross_attn_token_to_image(q=q, k=k, v=keys)
        queries = queries + attn_out
        queries = layer.norm2(queries)
        # MLP block
        queries = queries + layer.mlp(queries)
        queries = layer.norm3(queries)
        # Cross attention block, image embedding attending to the tokens (k unchanged since above)
        q = queries + query_pe
        attn_out = layer.cross_attn_image_to_token(q=k, k=q, v=queries)
        keys = keys + attn_out
        keys = layer.norm4(keys)
        return queries, keys

    def upscale(self, hyper: torch.Tensor, keys: torch.Tensor, crops: torch.Tensor | None) -> torch.Tensor:
        """MaskDecoder.predict_masks after the transformer and hypernetworks: [K, 4, 4h, 4w] logits."""
        d = self.decoder
        _, c, h, w = self.shape
        b = len(keys)
        src = keys.transpose(1, 2).view(b, c, h, w)
        if self.high_res is None:
            upscaled = d.output_upscaling(src)
        else:
            f1, f0 = (f if crops is None else f[crops] for f in self.high_res)
            deconv1, norm1, act1, deconv2, act2 = d.output_upscaling
            upscaled = act1(norm1(deconv1(src) + f1))
            upscaled = act2(deconv2(upscaled) + f0)
        b, c, h, w = upscaled.shape
        return (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)


def part(crops: torch.Tensor | None, i: int, j: int) -> torch.Tensor | None:
    """Rows i:j of the prompts' crop indices (None: one crop)."""
    return None if crops is None else crops[i:j]


def batch_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of batches of `size`; a remainder under `size` joins the last full batch."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < size:
        starts.pop()
    return [(i, starts[k + 1] if k + 1 < len(starts) else n) for k, i in enumerate(starts)]


def attend(m: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment_anything's decoder Attention.forward after its input projections (q, k, v projected;
    a batch of 1 broadcasts over the prompts)."""
    q = m._separate_heads(q, m.num_heads)
    k = m._separate_heads(k, m.num_heads)
    v = m._separate_heads(v, m.num_heads)
    _, _, _, c_per_head = q.shape
    attn = q @ k.permute(0, 1, 3, 2)  # [B, heads, Nq, Nk]
    attn = attn / math.sqrt(c_per_head)
    attn = torch.softmax(attn, dim=-1)
    out = attn @ v
    out = m._recombine_heads(out)
    return m.out_proj(out)
