"""The best single-point mean IoU a model of this input size could reach: each object's exact mask seen
through the model's low-res output (resized into the input frame, area-averaged to the low-res grid,
then upscaled by the model's own postprocess_masks and thresholded), scored against the exact mask. Objects of at
least --min-area px on the quality scenes (seed 1000), grouped by size as
data_engine/train/evaluate.py groups them.

    python tools/tiny_model/resolution_ceiling.py [--variant tiny] [--seed 1000] [--scenes 50]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from data_engine.io import rle
from data_engine.model.build import seeded_sam
from data_engine.synth import scenes as synth

SMALL = 400  # px: the evaluation's "under 400 px" group


def seen_at_low_res(sam, mask: np.ndarray) -> np.ndarray:
    """The exact mask as a perfect low-res output of `sam` would draw it, at full size."""
    size, low = sam.image_encoder.img_size, sam.prompt_encoder.mask_input_size
    nh, nw = ResizeLongestSide(size).get_preprocess_shape(*mask.shape, size)
    frame = F.interpolate(torch.from_numpy(mask).float()[None, None], (nh, nw), mode="area")
    frame = F.pad(frame, (0, size - nw, 0, size - nh))
    # Area-averaged onto the low-res grid, as logits sharp enough to threshold at the half-covered cells
    logits = (F.adaptive_avg_pool2d(frame, low) - 0.5) * 20
    return (sam.postprocess_masks(logits, (nh, nw), mask.shape)[0, 0] > 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tiny", help="architecture whose input size is used")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--min-area", type=int, default=100)
    args = parser.parse_args()
    sam = seeded_sam(args.variant)  # the architecture's sizes and postprocessing; its weights are not used
    small, large = f"under {SMALL} px", f"{SMALL} px and more"
    groups = {small: [], large: []}
    for index in range(args.scenes):
        for obj in synth.make_scene(args.seed, index)["objects"]:
            area = int(obj["mask"].sum())
            if area >= args.min_area:
                groups[small if area < SMALL else large].append(
                    rle.mask_iou(seen_at_low_res(sam, obj["mask"]), obj["mask"])
                )
    every = sum(groups.values(), [])
    size, (low, _) = sam.image_encoder.img_size, sam.prompt_encoder.mask_input_size
    print(
        f"{args.variant}: {size}-px input, {low}x{low} low-res masks; {len(every)} objects of >= {args.min_area} px "
        f"on {args.scenes} scenes of seed {args.seed}"
    )
    print(f"  all: mean IoU {np.mean(every):.3f}, share at >= 0.88 {np.mean(np.array(every) >= 0.88):.3f}")
    for name, values in groups.items():
        print(
            f"  {name}: {len(values)} objects, mean IoU {np.mean(values):.3f}, "
            f"share at >= 0.88 {np.mean(np.array(values) >= 0.88):.3f}"
        )


if __name__ == "__main__":
    main()
