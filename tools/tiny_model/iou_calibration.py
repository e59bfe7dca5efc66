"""Is the IoU head calibrated where the automatic stage filters? Grid-prompt masks binned by predicted IoU.

For each scene, every point of a 32x32 grid (no crops) prompts the model; each of its 3 masks gets
its best IoU against the scene's objects. Per bin of predicted IoU: the masks' mean true IoU and the
share at or above 0.75 and 0.88 (amg=sa1b's filter). A calibrated head has mean true ~ predicted.

    python tools/tiny_model/iou_calibration.py [--checkpoint PATH] [--seed 500] [--scenes 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from segment_anything import SamPredictor

from data_engine.model.build import build_sam
from data_engine.synth import scenes as synth
from data_engine.train.evaluate import grid_mask_ious


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="tiny checkpoint (default: the embedded model)")
    parser.add_argument("--seed", type=int, default=500, help="scene seed (500: tuning scenes; 1: training)")
    parser.add_argument("--scenes", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    predictor = SamPredictor(build_sam("tiny", checkpoint=args.checkpoint, device="cpu"))
    with torch.no_grad():
        pairs = [grid_mask_ious(predictor, synth.make_scene(args.seed, i)) for i in range(args.scenes)]
    predicted, true = (np.concatenate(p) for p in zip(*pairs))
    print(f"{len(predicted)} masks, correlation {np.corrcoef(predicted, true)[0, 1]:.3f}")
    print("predicted IoU   masks  mean true  >=0.75  >=0.88")
    binned = np.clip(predicted, 0.0, 0.999)  # predictions above 1 join the top bin, below 0 the first
    for low in np.arange(0.0, 1.0, 0.05):
        inside = (binned >= low) & (binned < low + 0.05)
        if inside.any():
            t = true[inside]
            print(
                f"{low:.2f}-{low + 0.05:.2f}  {inside.sum():9d}  {t.mean():9.3f}  "
                f"{np.mean(t >= 0.75):6.2f}  {np.mean(t >= 0.88):6.2f}"
            )
    print(f"predicted >= 0.88: {(predicted >= 0.88).sum()}, true >= 0.88: {(true >= 0.88).sum()}")


if __name__ == "__main__":
    main()
