"""A mask-aware correction to SAM's IoU prediction, for the tiny model.

SAM's IoU head reads only the IoU token: it never sees the mask it scores. A small encoder's token
ranks masks too loosely for the automatic stage's 0.88 filter (data_engine/weights/sam_tiny.md). This
branch looks at each output mask, as Mask Scoring R-CNN's mask-IoU head does: the decoder's upscaled
features pooled inside and outside the soft mask, its area, how soft its edge is, how stable it is to
the threshold, and the head's own prediction; a small MLP turns them into a correction added to the
prediction. Its last layer starts at zero, so a model grown with it predicts exactly as before.
"""
from __future__ import annotations

import torch
from torch import nn

EXTRA = 4  # area, edge softness, stability, the head's prediction


def mask_features(masks: torch.Tensor, upscaled: torch.Tensor, iou_pred: torch.Tensor) -> torch.Tensor:
    """[B, M, h, w] mask logits, [B, C, h, w] upscaled decoder features, [B, M] predicted IoU ->
    [B, M, 2C + EXTRA] features per mask."""
    logits = masks.flatten(2)  # [B, M, h*w]
    soft = torch.sigmoid(logits)
    feats = upscaled.flatten(2).transpose(1, 2)  # [B, h*w, C]
    # Features pooled inside and outside each soft mask
    inside_mass, outside_mass = soft.sum(-1, keepdim=True), (1 - soft).sum(-1, keepdim=True)
    inside = soft @ feats / (inside_mass + 1)
    outside = (1 - soft) @ feats / (outside_mass + 1)
    # Shape statistics: area fraction, edge softness, stability to the threshold (offset 1, as in SAM)
    area = soft.mean(-1)
    edge = (soft * (1 - soft)).sum(-1) / (inside_mass[..., 0] + 1)
    stability = (logits > 1).sum(-1) / (logits > -1).sum(-1).clamp(min=1)
    extra = torch.stack([area, edge, stability.to(area.dtype), iou_pred], -1)
    return torch.cat([inside, outside, extra], -1)


class MaskScore(nn.Module):
    """Correction to the predicted IoU of each output mask from mask_features (zero at the start)."""

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        width = 2 * channels + EXTRA
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, masks: torch.Tensor, upscaled: torch.Tensor, iou_pred: torch.Tensor) -> torch.Tensor:
        """[B, M] corrected IoU predictions."""
        return iou_pred + self.mlp(mask_features(masks, upscaled, iou_pred))[..., 0]
