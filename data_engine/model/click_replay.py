"""Replay annotators' click sessions through SAM the way SA-1B's interactive tool ran them.

One image embedding per image; per object, each click predicts from all clicks so far plus the
previous low-res logits as the mask prompt: three masks for the first click (the one SAM rates
best is kept), one mask after that.
"""

from __future__ import annotations

import numpy as np
from segment_anything import SamPredictor

from data_engine.io import rle
from data_engine.model.build import is_sam2


class ClickReplayer:
    """Holds one predictor (image_predictor); `replay_image` sets the image once and replays all its objects."""

    def __init__(self, sam):
        self.predictor = image_predictor(sam)

    def replay_image(self, image: np.ndarray, objects: list[dict]) -> list[dict]:
        """[H, W, 3] uint8 RGB image, objects with 'clicks' and 'final_counts' -> one result per object."""
        self.predictor.set_image(image)  # the only image-encoder pass for this image
        return [self.replay_object(o["clicks"], o.get("final_counts")) for o in objects]

    def replay_object(self, clicks: list[list], final_counts: str | None) -> dict:
        """Model mask after the last click, IoU with the final mask after each click, SAM's own scores."""
        h, w = self.predictor.original_size
        final = rle.decode(final_counts, h, w) if final_counts else None
        logits, ious, scores = None, [], []
        for k in range(1, len(clicks) + 1):
            mask, score, logits = self.predict(clicks[:k], logits)
            scores.append(score)
            if final is not None:
                ious.append(rle.mask_iou(mask, final))
        return {
            "model_counts": rle.encode(mask[None])[0],
            "iou_per_click": ious if final is not None else None,
            "predicted_iou_per_click": scores,
        }

    def predict(self, clicks: list[list], logits: np.ndarray | None):
        """All clicks so far (+ previous logits) -> (mask [H, W], predicted IoU, low-res logits [1, h, w])."""
        points = np.asarray(clicks, dtype=np.float64)  # [K, 3]: x, y, label
        first = logits is None
        masks, scores, low_res = self.predictor.predict(
            point_coords=points[:, :2],
            point_labels=points[:, 2].astype(np.int64),
            mask_input=logits,
            multimask_output=first,
        )
        best = int(np.argmax(scores)) if first else 0
        return masks[best], float(scores[best]), low_res[best][None]


def image_predictor(sam):
    """segment_anything's SamPredictor for a SAM, SAM 2's image predictor for a SAM 2.1 model (the same
    set_image and predict calls, and `original_size`)."""
    if is_sam2(sam):
        from data_engine.model.sam2_model import Sam2Predictor

        return Sam2Predictor(sam)
    return SamPredictor(sam)
