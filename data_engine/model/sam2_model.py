"""SAM 2.1 as an image model: the `sam2` package's SAM2Base with the calls this project makes of a SAM.

SAM 2.1 differs from SAM where an image model is concerned:
- its input is the image resized to a square (no padding), normalised with ImageNet's mean and std;
  prompt coordinates scale by S / width and S / height;
- its mask decoder also reads stride-4 and stride-8 image features; here they travel inside the image
  embedding, pixel-unshuffled onto its grid and appended as channels (as the embedded tiny model's do,
  model/tiny_decoder.py), so batches of embeddings stay one tensor;
- a box prompt enters as two points labelled 2 and 3 (SAM2ImagePredictor's way);
- with one output per prompt the decoder falls back to the best of its three outputs when the single
  one is unstable (build_sam2's default for images).
The video parts (memory attention and encoder) are built too, so that official checkpoints load whole;
they are never run.

Importing the `sam2` package initialises Hydra's global state (GlobalHydra) when nothing has; that would
stop this project's own Hydra from composing later in the same process. The import is done under
`hydra_untouched`, which clears what it set.
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources

import torch
import torch.nn.functional as F


@contextmanager
def hydra_untouched():
    """Leave GlobalHydra as it was before the block (sam2's package import initialises it)."""
    from hydra.core.global_hydra import GlobalHydra

    was_initialized = GlobalHydra.instance().is_initialized()
    try:
        yield
    finally:
        if not was_initialized:
            GlobalHydra.instance().clear()


with hydra_untouched():
    from sam2.modeling.sam2_base import SAM2Base
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from sam2.utils.transforms import SAM2Transforms

# The config files of the sam2 package for each variant
CONFIGS = {
    "sam2.1_hiera_t": "sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "sam2.1_hiera_l.yaml",
}
# build_sam2's settings for image use: a single output falls back to the best of three when unstable
IMAGE_DECODER = dict(
    dynamic_multimask_via_stability=True,
    dynamic_multimask_stability_delta=0.05,
    dynamic_multimask_stability_thresh=0.98,
)
BOX_LABELS = (2, 3)  # the prompt encoder's labels of a box's top-left and bottom-right corners


class Sam2Image(SAM2Base):
    """SAM2Base with the image-model calls of this project (the names SAM's modules have where they exist).

    embed: [B, 3, S, S] normalised images -> packed embeddings [B, D + 16 D/4 ... , h, w] (see pack);
    decode: packed embedding [1, ...] and prompt embeddings -> low-res logits [K, M, 4h, 4w], IoU [K, M];
    preprocess / postprocess_masks / prompt_encoder / mask_decoder / image_encoder.img_size / mask_threshold
    as on segment_anything's Sam.
    """

    family = "sam2"
    mask_threshold = 0.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Where this project's SAM code reads the input side (segment_anything's ImageEncoderViT.img_size)
        self.image_encoder.img_size = self.image_size

    @property
    def prompt_encoder(self):
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self):
        return self.sam_mask_decoder

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] float RGB in 0..255, already in the model's square frame -> normalised as SAM2Transforms."""
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device)[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device)[:, None, None]
        return (x / 255.0 - mean) / std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] normalised images -> packed embeddings [B, P, S/16, S/16] (the image embedding with the
        no-memory embedding added, as SAM2ImagePredictor.set_image, and the two high-res maps)."""
        backbone_out = self.forward_image(x)
        _, feats, _, sizes = self._prepare_backbone_features(backbone_out)
        if self.directly_add_no_mem_embed:
            feats[-1] = feats[-1] + self.no_mem_embed
        # [HW, B, C] -> [B, C, H, W], finest level first
        s0, s1, embedding = (f.permute(1, 2, 0).view(x.shape[0], -1, *size) for f, size in zip(feats, sizes))
        return pack(embedding, s1, s0)

    def decode(self, packed: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor, multimask: bool):
        """Packed embedding [1, P, h, w] (shared by the K prompts) or [K, P, h, w], prompt embeddings
        [K, T, D] and [K or 1, D, h, w] -> low-res logits [K, M, 4h, 4w] and predicted IoU [K, M]
        (M = 3 with multimask, else 1)."""
        embedding, s1, s0 = unpack(packed, self.sam_mask_decoder.transformer_dim)
        masks, iou, _, _ = self.sam_mask_decoder(
            image_embeddings=embedding,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=embedding.shape[0] != sparse.shape[0],
            high_res_features=[s0, s1],
        )
        return masks, iou

    def encode_prompts(self, points=None, boxes: torch.Tensor | None = None, masks: torch.Tensor | None = None):
        """As segment_anything's prompt_encoder(points=, boxes=, masks=): points ([K, N, 2], [K, N]) and boxes
        [K, 4] XYXY in the model's input frame, masks [K, 1, 4h, 4w] -> sparse [K, T, D], dense embeddings.
        Boxes go in as two labelled corner points ahead of the points, as SAM2ImagePredictor sends them."""
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            labels = torch.tensor([BOX_LABELS], dtype=torch.int, device=boxes.device).expand(len(corners), 2)
            if points is not None:
                corners, labels = torch.cat([corners, points[0]], 1), torch.cat([labels, points[1].int()], 1)
            points = (corners, labels)
        return self.sam_prompt_encoder(points=points, boxes=None, masks=masks)

    def postprocess_masks(self, masks: torch.Tensor, input_size, original_size) -> torch.Tensor:
        """Low-res logits [B, M, h, w] -> [B, M, H, W] at the image's size: the whole square frame is the
        image (input_size, SAM's unpadded part, is the full square here), as SAM2Transforms.postprocess_masks."""
        return F.interpolate(masks.float(), tuple(original_size), mode="bilinear", align_corners=False)


def pack(embedding: torch.Tensor, s1: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    """Embedding [B, D, h, w], stride-8 map [B, D/4, 2h, 2w], stride-4 map [B, D/8, 4h, 4w] -> [B, 4D, h, w]."""
    return torch.cat([embedding, F.pixel_unshuffle(s1, 2), F.pixel_unshuffle(s0, 4)], 1)


def unpack(packed: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pack's inverse: [B, 4D, h, w] -> embedding [B, D, h, w], stride-8 map, stride-4 map."""
    embedding, s1, s0 = torch.split(packed, [d, d, 2 * d], 1)
    return embedding, F.pixel_shuffle(s1, 2), F.pixel_shuffle(s0, 4)


def make_sam2(variant: str, image_size: int | None = None) -> Sam2Image:
    """The architecture of `variant` (sam2's own config file) with its initial weights; `image_size`
    (a multiple of 32) replaces the 1024-px input (smaller for tests; the official weights are trained at 1024)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(str(resources.files("sam2") / "configs" / "sam2.1" / CONFIGS[variant]))
    cfg.model._target_ = f"{Sam2Image.__module__}.{Sam2Image.__qualname__}"
    cfg.model.sam_mask_decoder_extra_args = IMAGE_DECODER
    if image_size is not None:
        cfg.model.image_size = image_size
    return instantiate(cfg.model, _recursive_=True)


class Sam2Predictor(SAM2ImagePredictor):
    """SAM2ImagePredictor for any input size (its feature sizes are written for 1024 px), with SamPredictor's
    `original_size`."""

    def __init__(self, model: Sam2Image, **kwargs):
        super().__init__(model, **kwargs)
        side = model.image_size
        self._bb_feat_sizes = [(side // 4, side // 4), (side // 8, side // 8), (side // 16, side // 16)]

    @property
    def original_size(self) -> tuple[int, int]:
        return tuple(self._orig_hw[0])


def image_transforms(model: Sam2Image) -> SAM2Transforms:
    """SAM 2's image and coordinate transforms for `model`'s input size."""
    return SAM2Transforms(model.image_size, mask_threshold=model.mask_threshold)
