"""Seconds per image: segment_anything's SamAutomaticMaskGenerator vs data_engine's generator.

Same model, same images, same settings, one process. Settings come from the project's `amg=reference`
preset (SAM's defaults), optionally with SA-1B's crop layers, so both generators must give the same
masks; the script checks that before it prints any timing.

    python benchmarks/amg_vs_reference.py                    # embedded tiny model, bundled samples, CPU
    python benchmarks/amg_vs_reference.py --variant vit_h --checkpoint sam_vit_h_4b8939.pth --input IMAGES
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator

from data_engine.amg.generator import MaskGenerator
from data_engine.config import compose
from data_engine.io import rle
from data_engine.io.images import load_rgb
from data_engine.io.inputs import list_inputs
from data_engine.model.build import build_sam

SAM_KEYS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_overlap_ratio",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
)
SETTINGS = {
    "sam-defaults": {},
    "sa1b-crops": {"crop_n_layers": 2, "crop_n_points_downscale_factor": 2, "min_mask_region_area": 100},
    # Every candidate passes the score filters: the most upsampling and encoding work per prompt
    "open-filters": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "min_mask_region_area": 100},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=None, help="folder of images (default: bundled samples)")
    p.add_argument("--limit", type=int, default=6, help="number of images")
    p.add_argument("--variant", default="tiny")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--settings", default="sam-defaults,open-filters,sa1b-crops", help=f"comma list of {list(SETTINGS)}")
    p.add_argument("--repeats", type=int, default=1)
    return p.parse_args()


def timed(fn, image, repeats):
    """Best of `repeats` wall-clock seconds, and the last output (None if it raised)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = call(fn, image)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def call(fn, image):
    """SamAutomaticMaskGenerator raises IndexError when an image with crop layers has no mask at all."""
    try:
        return fn(image)
    except IndexError:
        return None


def agree(ref: list[dict] | None, ours: dict, height: int, width: int) -> tuple[bool, float]:
    """Same number of masks (and of empty ones) and every non-empty reference mask matched at IoU >= 0.99
    (returns the worst IoU)."""
    if ref is None:  # the reference crashed on an empty result: agreement means we found none either
        return len(ours["segmentation"]) == 0, 1.0
    if len(ref) != len(ours["segmentation"]):
        return False, 0.0
    # Empty masks (kept when the filters are open) have no IoU with anything: they must agree in number
    ref_full = [r["segmentation"]["counts"] for r in ref if r["area"] > 0]
    ours_full = [m for m, area in zip(ours["segmentation"], ours["area"]) if area > 0]
    if len(ref_full) != len(ours_full):
        return False, 0.0
    if not ref_full:
        return True, 1.0
    iou = rle.iou_matrix(ref_full, ours_full, height, width)
    worst = float(iou.max(1).min())
    return worst >= 0.99, worst


def bench(sam, images, amg: dict, repeats: int) -> dict:
    reference = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **{k: amg[k] for k in SAM_KEYS})
    ours = MaskGenerator(sam, **amg)
    # Warm-up (allocators, first-call overheads) on the first image, untimed
    call(reference.generate, images[0][1])
    ours.generate(images[0][1])
    rows = []
    for name, image in images:
        t_ref, out_ref = timed(reference.generate, image, repeats)
        t_ours, out_ours = timed(ours.generate, image, repeats)
        ok, worst = agree(out_ref, out_ours, *image.shape[:2])
        rows.append((name, image.shape[:2], len(out_ours["segmentation"]), t_ref, t_ours, ok, worst))
    return rows


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    root, names, _ = list_inputs(args.input)
    images = [(n, load_rgb(root / n, max_pixels=1 << 40)) for n in names[: args.limit]]
    sam = build_sam(args.variant, checkpoint=args.checkpoint, device=args.device)
    base = compose(["amg=reference"])["amg"]
    print(
        f"model={args.variant} device={sam.device} threads={torch.get_num_threads()} images={len(images)} from {root}"
    )
    failed = False
    for setting in args.settings.split(","):
        rows = bench(sam, images, {**base, **SETTINGS[setting]}, args.repeats)
        print(f"\n[{setting}] {SETTINGS[setting] or 'SamAutomaticMaskGenerator defaults'}")
        print(f"{'image':<28}{'size':>12}{'masks':>7}{'reference s':>13}{'ours s':>9}{'speed-up':>10}  agree")
        for name, size, n, t_ref, t_ours, ok, worst in rows:
            print(
                f"{name[-28:]:<28}{str(size):>12}{n:>7}{t_ref:>13.3f}{t_ours:>9.3f}{t_ref / t_ours:>9.2f}x  "
                f"{'yes' if ok else 'NO'} (worst IoU {worst:.3f})"
            )
        t_ref = np.mean([r[3] for r in rows])
        t_ours = np.mean([r[4] for r in rows])
        print(f"{'mean seconds per image':<47}{t_ref:>13.3f}{t_ours:>9.3f}{t_ref / t_ours:>9.2f}x")
        failed |= not all(r[5] for r in rows)
    if failed:
        print("\nOUTPUTS DISAGREE: the timings above do not compare like with like", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
