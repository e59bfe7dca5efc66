"""Seconds per image of each model family and size: its image encoder on one 1024-px input, and its mask
decoder on 64 point prompts (the automatic stage's batch, 3 masks each, every prompt decoded in full), with
seeded random weights (speed only: the same arithmetic as with the official weights). Also each model's
parameters.

    python benchmarks/model_speed.py                                   # every variant, on the CPU
    python benchmarks/model_speed.py --variants vit_b,sam2.1_hiera_t --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from data_engine.amg.generator import mask_generator
from data_engine.model.build import SAM2, seeded_sam
from data_engine.synth.scenes import make_scene

DEFAULT = ("vit_b", "vit_l", "vit_h", *SAM2)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(DEFAULT), help="comma list of model variants")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up (the fastest counts)")
    return p.parse_args()


def timed(fn, repeats: int, cuda: bool) -> float:
    """Fastest of `repeats` runs of fn() after one warm-up, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def measure(variant: str, image: np.ndarray, device: str, repeats: int) -> dict:
    """Encoder seconds for `image`, decoder seconds for 64 point prompts, parameters in millions."""
    model = seeded_sam(variant).to(device).eval()
    generator = mask_generator(model, points_per_side=8, crop_n_layers=0)
    crop_box = [0, 0, image.shape[1], image.shape[0]]
    ((_, (embedding,)),) = generator._embed_crops([image], [(0, crop_box)])
    points = generator.point_grids[0] * np.array(image.shape[1::-1])[None]  # [64, 2] px
    cuda = device.startswith("cuda")
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "encoder_s": timed(lambda: generator._embed_crops([image], [(0, crop_box)]).__next__(), repeats, cuda),
        # The model's own decoder on every prompt (no IoU gating: speed of the architecture, not of the filters)
        "decoder_s": timed(lambda: generator._decode(embedding, points, image.shape[:2]), repeats, cuda),
    }


def main() -> None:
    args = parse_args()
    image = make_scene(7, 0, 1024, 1024)["image"]
    print(f"device={args.device} threads={torch.get_num_threads()} image={image.shape[:2]} (seeded random weights)")
    print(f"{'model':<18}{'params (M)':>12}{'encoder s':>12}{'decoder s / 64 prompts':>25}")
    for variant in args.variants.split(","):
        r = measure(variant, image, args.device, args.repeats)
        print(f"{variant:<18}{r['params_m']:>12.1f}{r['encoder_s']:>12.2f}{r['decoder_s']:>25.2f}", flush=True)


if __name__ == "__main__":
    main()
