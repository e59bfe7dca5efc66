"""The `verifier` group's section: the mask verifier stage=auto and stage=semi score masks with
(`checkpoint`) and route stage 2's prefill by (`accept`, `reject`), and how stage=verifier trains it.

Imported without torch: composing any config registers this section's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_engine.errors import require
from data_engine.schema import setting

CHECKPOINT = "give a model.pt written by stage=verifier"


@dataclass(frozen=True)
class Verifier:
    # a verifier model.pt: stage=auto and stage=semi score every mask with it (verifier_score);
    # stage=verifier starts from it
    checkpoint: str | None = setting(None, exists="file", hint=CHECKPOINT)
    # stage=semi: a prefilled mask scoring at least this is accepted without review (null: no accepted route)
    accept: float | None = setting(0.9, ge=0, le=1)
    # stage=semi: a prefilled mask scoring below this is dropped, not shown (null: no rejected route)
    reject: float | None = setting(0.3, ge=0, le=1)
    # stage=verifier: stage=semi_merge and stage=audit output folders (their labels)
    data: list[str] = setting([], exists="dir", hint="give stage=semi_merge or stage=audit output folders")
    # acceptable: kept by the annotators, or at least this IoU with their mask or an expert's
    label_iou: float = setting(0.9, gt=0, le=1)
    crop_size: int = setting(32, ge=8, le=512)  # the image and mask around each mask, resized to this square
    context: float = setting(0.5, ge=0, le=4)  # the square around the mask's box grows by this share of its side
    # channels of the first convolution (then 2x, 4x; a multiple of 8); 0: SAM's scores alone
    width: int = setting(16, ge=0, le=512)
    val_fraction: float = setting(0.2, ge=0, le=0.9)  # images held out for metrics.json, chosen by file name
    steps: int = setting(400, ge=1)  # optimizer steps
    batch_size: int = setting(64, ge=1)  # masks per step
    lr: float = setting(2.0e-3, ge=0)  # peak, after a linear warmup, then cosine decay to 1%
    warmup_steps: int = setting(20, ge=0)
    weight_decay: float = setting(1.0e-4, ge=0)
    checkpoint_every: int = setting(100, ge=1)  # steps between checkpoints (checkpoints/last.pt, written atomically)
    device: str | None = setting(None)  # null: cuda when available, else cpu
    num_threads: int | None = setting(None, ge=1)  # torch CPU threads (null: torch's default)
    deterministic: bool = setting(True)  # torch's deterministic kernels

    def check(self) -> None:
        require(
            self.accept is None or self.reject is None or self.reject < self.accept,
            "verifier.reject",
            f"must be below verifier.accept ({self.accept}), got {self.reject}: a mask cannot be both "
            "rejected and accepted, and masks between them are the ones reviewed",
        )
        require(
            self.width % 8 == 0,
            "verifier.width",
            f"must be a multiple of 8 (0: no convolutions), got {self.width}",
        )
        require(
            self.device in (None, "cpu", "cuda") or self.device.startswith("cuda:"),
            "verifier.device",
            f"{self.device!r} is not null, cpu, cuda or cuda:N",
        )
        if self.device and self.device.startswith("cuda"):
            import torch

            require(
                torch.cuda.is_available(),
                "verifier.device",
                f"{self.device} was asked for but torch sees no GPU; pass verifier.device=cpu",
            )


@dataclass(frozen=True)
class VerifierTraining(Verifier):
    """The verifier section as stage=verifier reads it: it needs labelled outputs to train on."""

    def check(self) -> None:
        super().check()
        require(
            bool(self.data),
            "verifier.data",
            "give stage=semi_merge or stage=audit output folders, e.g. 'verifier.data=[out/merged]'",
        )
