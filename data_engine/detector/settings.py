"""The `detector` group's section: the class-agnostic box detector, and how stage=detector trains it
(stage=semi reads its checkpoint and image sizes).

Imported without torch: composing any config registers this section's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.errors import require
from data_engine.schema import setting

VARIANT_NAMES = ("small", "resnet50_fpn_v2")  # detector.model.VARIANTS builds each
# The build settings a checkpoint holds (the detector.* keys of the same names), each with its bounds: an
# image side of 60000 px would ask each image for tens of GB.
MAX_SIDE = 4096
SETTING_BOUNDS = {"min_size": (1, MAX_SIDE), "max_size": (1, MAX_SIDE), "box_detections_per_img": (1, 10000)}
SETTING_KEYS = (*SETTING_BOUNDS, "box_nms_thresh")


def bounded(default: int, key: str):
    low, high = SETTING_BOUNDS[key]
    return setting(default, ge=low, le=high)


@dataclass(frozen=True)
class Detector:
    # the group's option: small (CPU-sized Faster R-CNN, GroupNorm conv backbone, 64-channel FPN) or
    # resnet50_fpn_v2 (torchvision's, GPU-sized); one "object" class
    variant: str = setting("small", choices=VARIANT_NAMES)
    # a detector checkpoint: stage=detector starts from it, stage=semi detects with it
    checkpoint: str | None = setting(None, exists="file", hint="give a detector checkpoint file")
    # stage=detector: data-engine output folders (with masks/) and/or COCO .json files
    data: list[str] = setting([], exists="path")
    image_root: str | None = setting(
        None
    )  # image folder for every source; null: each source's own (run input, pictures/)
    max_images: int | None = setting(None, ge=1)  # load at most this many images (null: all)
    val_fraction: float = setting(0.1, ge=0, le=1)  # images held out for metrics.json, chosen by image id
    # images are resized so the short side is min_size, the long side at most max_size
    min_size: int = bounded(320, "min_size")
    max_size: int = bounded(320, "max_size")
    box_detections_per_img: int = bounded(300, "box_detections_per_img")  # SA-1B images hold ~100 masks
    box_nms_thresh: float = setting(0.5, ge=0, le=1)  # per-class NMS of the final boxes
    steps: int = setting(500, ge=1)  # optimizer steps
    images_per_step: int = setting(4, ge=1)
    optimizer: str = setting("adamw", choices=("adamw", "sgd"))  # sgd: momentum 0.9
    lr: float = setting(2.0e-3, ge=0)  # peak, after a linear warmup, then cosine decay to 1%
    warmup_steps: int = setting(50, ge=0)
    weight_decay: float = setting(1.0e-4, ge=0)
    grad_clip: float = setting(10.0, ge=0)  # max gradient norm (0: off)
    hflip: bool = setting(True)  # mirror half the training images left-right
    checkpoint_every: int = setting(50, ge=1)  # steps between checkpoints (checkpoints/last.pt, written atomically)
    device: str | None = setting(None)  # null: cuda when available, else cpu
    num_threads: int | None = setting(None, ge=1)  # torch CPU threads (null: torch's default)
    deterministic: bool = setting(True)  # torch's deterministic kernels

    def check(self) -> None:
        require(
            self.min_size <= self.max_size,
            "detector.min_size",
            f"must not exceed detector.max_size ({self.max_size}), got {self.min_size}",
        )
        require(
            self.device in (None, "cpu", "cuda") or self.device.startswith("cuda:"),
            "detector.device",
            f"{self.device!r} is not null, cpu, cuda or cuda:N",
        )
        if self.device and self.device.startswith("cuda"):
            import torch

            require(
                torch.cuda.is_available(),
                "detector.device",
                f"{self.device} was asked for but torch sees no GPU; pass detector.device=cpu",
            )

    def build_settings(self) -> dict:
        """The FasterRCNN keyword arguments of this section (what a checkpoint records)."""
        return {key: getattr(self, key) for key in SETTING_KEYS}


@dataclass(frozen=True)
class DetectorTraining(Detector):
    """The detector section as stage=detector reads it: it needs data to train on."""

    def check(self) -> None:
        super().check()
        require(
            bool(self.data),
            "detector.data",
            "give one or more data-engine output folders or COCO .json files, e.g. 'detector.data=[out/synth]'",
        )
