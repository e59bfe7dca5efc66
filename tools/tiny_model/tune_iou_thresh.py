"""Recall and masks per image of the automatic stage for several predicted-IoU thresholds, on tuning
scenes (seed 500, not the quality seed 1000), 32x32 grid without crops: how amg=tiny's threshold was chosen.

    python tools/tiny_model/tune_iou_thresh.py [--checkpoint PATH] 0.3 0.4 0.5 0.6 0.7 0.8
"""

from __future__ import annotations

import argparse

import torch

from data_engine.config import compose
from data_engine.model.build import build_sam
from data_engine.synth import scenes as synth
from data_engine.train.evaluate import auto_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("thresholds", nargs="+", type=float, help="pred_iou_thresh values to try")
    parser.add_argument("--checkpoint", default=None, help="tiny checkpoint (default: the embedded model)")
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--scenes", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sam = build_sam("tiny", checkpoint=args.checkpoint, device="cpu")
    amg = compose(["amg=sa1b", "amg.crop_n_layers=0"])["amg"]
    scenes = [synth.make_scene(args.seed, i) for i in range(args.scenes)]
    print("pred_iou_thresh  recall(>=400px, IoU>=0.75)  objects  masks/image")
    for thresh in args.thresholds:
        with torch.no_grad():
            f = auto_figures(sam, scenes, {**amg, "pred_iou_thresh": thresh})
        print(
            f"{thresh:15.2f}  {f['auto_recall_400px_iou75']:26.3f}  "
            f"{f['auto_objects']:7d}  {f['masks_per_image']:11.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
