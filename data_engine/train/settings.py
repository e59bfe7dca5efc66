"""The `train` section: how the train stage trains or fine-tunes SAM (read by train.loop and train.recipe).

Imported without torch: composing any config registers this section's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.schema import setting

DATA_HINT = "give one or more data-engine output folders or COCO .json files, e.g. train.data=[out/synth]"


@dataclass(frozen=True)
class Train:
    # data-engine output folders (with masks/) and/or COCO instances .json files
    data: list[str] = setting([], required=DATA_HINT, exists="path")
    # image folder for every source; null: each source's own (run input, pictures/)
    image_root: str | None = setting(None, exists="path")
    max_images: int | None = setting(None, ge=1)  # load at most this many images (null: all)
    # pretrained: the model group's weights; scratch: seeded random weights; partial: seeded weights,
    # then every tensor of model.checkpoint that fits (growing a model)
    init: str = setting("pretrained", choices=("pretrained", "scratch", "partial"))
    # true: train prompt encoder and mask decoder only (fine-tuning a big checkpoint)
    freeze_image_encoder: bool = setting(False)
    steps: int = setting(1000, ge=1)  # optimizer steps
    images_per_step: int = setting(4, ge=1)  # images per batch (one image-encoder pass each)
    masks_per_image: int = setting(12, ge=1)  # masks sampled per image; each gets its own prompts
    # masks are sampled with probability ~ area ** area_power (0: uniform, < 0: small masks more often)
    area_power: float = setting(0.0)
    box_prob: float = setting(0.5, ge=0, le=1)  # chance that a mask's first prompt is a jittered box, not a point
    # chance that an image's first prompts also carry a blocky copy of the mask (mask prompt)
    coarse_mask_prob: float = setting(0.0, ge=0, le=1)
    focal_weight: float = setting(20.0, ge=0)  # mask loss = focal_weight * focal + dice_weight * dice (SAM: 20 : 1)
    dice_weight: float = setting(1.0, ge=0)
    iou_weight: float = setting(1.0, ge=0)  # weight of the IoU head's mean-squared error in the loss (SAM: 1)
    # false: the IoU head learns the best output's IoU only (SAM, SAM 2); true: all 3
    supervise_all_iou: bool = setting(False)
    # drawn: IoU with the prompt's mask; containing: for point prompts, the best IoU with any of the
    # image's masks holding the point (subpart / part / whole)
    iou_target: str = setting("drawn", choices=("drawn", "containing"))
    correction_clicks: int = setting(1, ge=0)  # correction clicks after the first prompt, each fed the previous logits
    lr: float = setting(1.0e-3, ge=0)  # AdamW peak learning rate, after a linear warmup, then cosine decay to 1%
    warmup_steps: int = setting(100, ge=0)
    weight_decay: float = setting(0.1, ge=0)
    grad_clip: float = setting(1.0, ge=0)  # max gradient norm (0: off)
    checkpoint_every: int = setting(100, ge=1)  # steps between checkpoints (checkpoints/last.pt, written atomically)
    num_threads: int | None = setting(None, ge=1)  # torch CPU threads (null: torch's default)
    deterministic: bool = setting(True)  # torch's deterministic kernels: two runs of one command give the same bytes
