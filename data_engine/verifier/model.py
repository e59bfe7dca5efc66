"""The verifier network and its checkpoint file.

The network sees the image and the mask around the mask's box (4 channels, resized to crop_size
square) and SAM's scores of the mask (`features.SCALARS`); it returns one logit: is the mask
acceptable as it is. A checkpoint of this project holds its format marker, build settings and
state dict, so `load_verifier(path)` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from data_engine.errors import UserError
from data_engine.io.atomic import atomic_path
from data_engine.model.build import check_finite, read_torch_dict

FORMAT = "data_engine.verifier/1"
WHAT_TO_DO = "give a model.pt written by stage=verifier"


class VerifierCheckpointError(UserError, ValueError):
    """A verifier checkpoint is missing, corrupt, or not a verifier of this project."""


def conv_gn(cin: int, cout: int) -> nn.Sequential:
    """3x3 stride-2 convolution, GroupNorm, ReLU: halves the resolution."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class MaskVerifier(nn.Module):
    """crops [B, 4, S, S] (RGB and mask, centred on 0) and scalars [B, F] -> logits [B].

    The logit is a linear function of the scalars (SAM's scores: a logistic regression on them) plus
    a small MLP over them and what the convolutions make of the crop (width 0: no convolutions, the
    crop is not looked at; for a few dozen labelled masks, which the convolutions only memorize).
    crop_size (S) and context say how its crops are cut (features.mask_crops); they travel with the
    checkpoint so that scoring cuts them as training did."""

    def __init__(self, crop_size: int = 32, context: float = 0.5, num_scalars: int = 4, width: int = 16):
        super().__init__()
        self.settings = {"crop_size": crop_size, "context": context, "num_scalars": num_scalars, "width": width}
        convs = [conv_gn(4, width), conv_gn(width, 2 * width), conv_gn(2 * width, 4 * width)] if width else []
        self.convs = nn.Sequential(*convs)
        self.head = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(4 * width + num_scalars, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)
        )
        self.scores = nn.Linear(num_scalars, 1)
        nn.init.zeros_(self.head[-1].weight)  # the crop's part starts at 0: the scores' regression first
        nn.init.zeros_(self.head[-1].bias)
        # The scalars are standardized by their training set's mean and spread (set by `fit_scalars`):
        # stability scores of 0.97 and 0.99 are far apart for the model only after that
        self.register_buffer("scalar_mean", torch.zeros(num_scalars))
        self.register_buffer("scalar_std", torch.ones(num_scalars))

    def fit_scalars(self, scalars: torch.Tensor) -> None:
        """Standardize the scalars by those of the training masks ([N, F])."""
        self.scalar_mean.copy_(scalars.mean(dim=0))
        self.scalar_std.copy_(
            scalars.std(dim=0).clamp(min=1e-3) if len(scalars) > 1 else torch.ones_like(self.scalar_std)
        )

    def forward(self, crops: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        scalars = (scalars - self.scalar_mean) / self.scalar_std
        pooled = self.convs(crops).mean(dim=(2, 3)) if len(self.convs) else crops.new_zeros(len(crops), 0)  # [B, 4w]
        return (self.scores(scalars) + self.head(torch.cat([pooled, scalars], dim=1))).squeeze(1)


def save_verifier(model: MaskVerifier, path, extra: dict | None = None) -> None:
    """model.pt: the format marker, build settings, state dict (on the CPU) and `extra` (e.g. the
    thresholds it was measured at), written atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "settings": dict(model.settings), "model": state, "extra": extra or {}}
    with atomic_path(Path(path)) as tmp:
        torch.save(doc, tmp)


def load_verifier(path, device: str = "cpu") -> MaskVerifier:
    """The verifier of a model.pt, in eval mode on `device`; a VerifierCheckpointError for anything else."""
    path = Path(path).expanduser()
    saved = read_torch_dict(path, f"verifier checkpoint {path}", VerifierCheckpointError, WHAT_TO_DO)
    if saved.get("format") != FORMAT or not isinstance(saved.get("settings"), dict):
        raise VerifierCheckpointError(f"verifier checkpoint {path} is not a verifier of this project; {WHAT_TO_DO}")
    try:
        model = MaskVerifier(**saved["settings"])
        model.load_state_dict(saved["model"])
    except (TypeError, RuntimeError) as err:
        raise VerifierCheckpointError(f"verifier checkpoint {path} is damaged ({err}); {WHAT_TO_DO}") from None
    check_finite(saved["model"], path)
    return model.to(device).eval()
