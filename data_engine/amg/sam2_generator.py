"""The fully-automatic stage's generator on SAM 2.1 image models (model/sam2_model.py).

MaskGenerator's steps (crops, point batches, filters, NMS, clean-up, each mask's window at full
resolution) with SAM 2's model calls, as SAM2AutomaticMaskGenerator makes them: the crop resized to a
square by SAM2Transforms, prompt coordinates scaled by side / width and side / height, the decoder with
the high-res features, logits resized straight to the crop's size. The point prompts go through the
model's own decoder points_per_batch at a time, as in SAM2AutomaticMaskGenerator, so under amg=sam2 the
masks are its masks (tests/test_sam2_generator.py).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from data_engine.amg.generator import MaskGenerator
from data_engine.model.sam2_model import Sam2Image, image_transforms


class Sam2MaskGenerator(MaskGenerator):
    def __init__(self, model: Sam2Image, **settings) -> None:
        """MaskGenerator's settings; sdpa_attention has no effect (Hiera's attention already uses
        scaled_dot_product_attention) and the decoder shortcuts of amg/decoder.py are not used."""
        super().__init__(model, **settings)
        self.transforms = image_transforms(model)
        self.encoder = torch.compile(model.embed) if settings.get("compile_encoder") else model.embed

    def _preprocess(self, crop: np.ndarray) -> torch.Tensor:
        """[h, w, 3] uint8 crop -> [1, 3, S, S]: resized to the square input and normalised (SAM2Transforms)."""
        return self.transforms(crop)[None].to(self.device)

    def input_size(self, crop_size) -> tuple[int, int]:
        """The crop fills the whole square input (no padding)."""
        side = self.model.image_size
        return side, side

    def _embed_points(self, points: np.ndarray, crops: np.ndarray, crop_sizes, masks: torch.Tensor | None = None):
        """Point prompts [B, 2] in their crops' px (crops [B]: sorted indices into crop_sizes), optionally mask
        prompts [B, 1, h, w] -> sparse [B, 2, D] and dense prompt embeddings (coordinates as SAM2Transforms)."""
        coords = torch.cat(
            [
                self.transforms.transform_coords(
                    torch.as_tensor(points[crops == c], dtype=torch.float32, device=self.device),
                    normalize=True,
                    orig_hw=size,
                )
                for c, size in enumerate(crop_sizes)
            ]
        )
        labels = torch.ones(len(points), 1, dtype=torch.int, device=self.device)
        return self.model.encode_prompts(points=(coords[:, None], labels), masks=masks)

    def _decode_boxes(self, embedding, boxes: np.ndarray, crop_size) -> tuple[torch.Tensor, torch.Tensor]:
        """Box prompts [B, 4] XYXY -> low-res logits [B, h, w] and predicted IoU [B], one mask per box (SAM 2's
        single output, falling back to the best of three when unstable)."""
        boxes = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
        coords = self.transforms.transform_boxes(boxes, normalize=True, orig_hw=crop_size)  # [B, 2, 2]
        sparse, dense = self.model.encode_prompts(boxes=coords.reshape(-1, 4))
        low_res, iou_preds = self._model_decoder(embedding, sparse, dense, multimask=False)
        return low_res[:, 0].float(), iou_preds[:, 0].float()

    def _model_decoder(self, embedding, sparse, dense, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2's mask decoder on one crop's packed embedding: [B, M, h, w] logits, [B, M] predicted IoU."""
        with self.autocast():
            return self.model.decode(embedding[None], sparse, dense, multimask)


def sam2_generator_settings(amg: dict, exclude=()) -> dict:
    """The amg settings SAM2AutomaticMaskGenerator also takes with the same meaning, for running it side by
    side with this generator. min_mask_region_area is left out: there it fills holes and removes islands in
    the low-res logits with sam2's CUDA extension (and does nothing without it); here it is SA-1B's
    full-resolution clean-up."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    shared = inspect.signature(SAM2AutomaticMaskGenerator).parameters.keys() & amg.keys()
    return {k: amg[k] for k in sorted(shared - {"min_mask_region_area", *exclude})}
