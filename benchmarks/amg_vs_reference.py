"""Seconds per image, per step: segment_anything's SamAutomaticMaskGenerator vs data_engine's generator.

Same model, same images, same settings, one process, the two generators alternating image by image.
Settings come from the project's `amg=reference` preset (SAM's semantics), optionally with SA-1B's
crop layers (`sa1b`), so both generators must give the same masks: the script checks that and says so
next to every timing. Per step (encoder, decoder, upsampling, filters, clean-up, RLE, rest) the time
is summed over the images; peak memory is the rise of the process's resident memory during a call
(CPU) or torch.cuda.max_memory_allocated (GPU).

Images: `samples` (the bundled ones, about 300-600 px) and `1500` (synthetic scenes with SA-1B's
release size: shortest side 1500 px). Models: the embedded `tiny`, or an official architecture
(`vit_b`, `vit_l`, `vit_h`) with its checkpoint or, without one, seeded random weights: speed only.

With `--family sam2` the model is a SAM 2.1 one (`sam2.1_hiera_t|s|b+|l`, seeded random weights unless
--checkpoint) and the reference is sam2's SAM2AutomaticMaskGenerator, with the project's `amg=sam2`
preset (its defaults); settings `sam2-defaults`, `crops` (SA-1B's crop layers), `m2m` (use_m2m) and
`open-filters`.

    python benchmarks/amg_vs_reference.py                       # tiny, 2 samples + one 1500-px scene, reduced grid
    python benchmarks/amg_vs_reference.py --variant vit_b --images 1500 --limit 1
    python benchmarks/amg_vs_reference.py --points-per-side 32 --crop-layers 2   # the full SA-1B recipe
    python benchmarks/amg_vs_reference.py --fast --device cuda  # also amg=sa1b_fast against the exact preset
    python benchmarks/amg_vs_reference.py --fast --fast-override amg.bf16_autocast=false  # one piece off
    python benchmarks/amg_vs_reference.py --family sam2 --images samples    # sam2.1_hiera_t, SAM 2's generator
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import segment_anything.automatic_mask_generator as sam_amg
import torch
from segment_anything import SamAutomaticMaskGenerator

import data_engine.amg.generator as our_amg
import data_engine.amg.select as our_select
from data_engine.amg import decoder as our_decoder
from data_engine.amg.agreement import agreement
from data_engine.amg.generator import mask_generator, sam_generator_settings
from data_engine.config import compose
from data_engine.io import rle
from data_engine.io.images import load_rgb
from data_engine.io.inputs import list_inputs
from data_engine.model.build import build_sam, seeded_sam
from data_engine.synth.scenes import make_scene

SETTINGS = {
    "sam-defaults": {},
    # The SA-1B recipe in SAM's semantics (crop layers, small-region clean-up)
    "sa1b": {"crop_n_layers": 2, "crop_n_points_downscale_factor": 2, "min_mask_region_area": 100},
    # Every candidate passes the score filters: the most upsampling and encoding work per prompt
    "open-filters": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "min_mask_region_area": 100},
}
# With --family sam2, on amg=sam2 (SAM2AutomaticMaskGenerator's min_mask_region_area is another clean-up: left at 0)
SETTINGS_SAM2 = {
    "sam2-defaults": {},
    "crops": {"crop_n_layers": 2, "crop_n_points_downscale_factor": 2},
    "m2m": {"use_m2m": True},
    "open-filters": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
}
STEPS = ("encoder", "decoder", "upsampling", "filters", "clean-up", "RLE", "rest")
# What each step is made of: (module, attribute) for both generators; methods of instances are added at run time
PATCHES = {
    "decoder": [(our_decoder.SharedImageDecoder, "__init__"), (our_decoder.SharedImageDecoder, "__call__")],
    "filters": [
        (sam_amg, "calculate_stability_score"),
        (sam_amg, "batched_mask_to_box"),
        (sam_amg, "is_box_near_crop_edge"),
        (sam_amg, "batched_nms"),
        (our_amg, "support_windows"),
        (our_amg, "window_filters"),
        (our_amg, "is_box_near_crop_edge"),
        (our_select, "batched_nms"),
    ],
    "clean-up": [(sam_amg, "remove_small_regions"), (our_select, "clean_small_regions_rle")],
    "RLE": [
        (sam_amg, "uncrop_masks"),
        (sam_amg, "mask_to_rle_pytorch"),
        (sam_amg, "rle_to_mask"),
        (sam_amg, "coco_encode_rle"),
        (sam_amg, "area_from_rle"),
        (our_amg, "encode_uncropped"),
        (rle, "encode"),
        (rle, "decode"),
        (rle, "area"),
        (rle, "bbox"),
    ],
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="samples,1500", help="comma list of: samples, 1500")
    p.add_argument("--input", default=None, help="folder of images instead of the bundled samples")
    p.add_argument("--limit", type=int, default=2, help="bundled samples (or images of --input)")
    p.add_argument("--limit-1500", type=int, default=1, help="1500-px scenes")
    p.add_argument("--family", default="sam", choices=["sam", "sam2"], help="sam2: SAM 2.1 against SAM 2's generator")
    p.add_argument(
        "--variant", default=None, help="tiny (default), vit_b, vit_l, vit_h; sam2.1_hiera_t (default), _s, _b+, _l"
    )
    p.add_argument("--checkpoint", default=None, help="official weights (default for vit_*: seeded random ones)")
    p.add_argument("--device", default=None)
    p.add_argument("--settings", default=None, help=f"comma list of {list(SETTINGS)} (sa1b) or {list(SETTINGS_SAM2)}")
    p.add_argument("--points-per-side", type=int, default=16, help="grid on the full image (SA-1B: 32)")
    p.add_argument("--crop-layers", type=int, default=1, help="crop layers for sa1b (SA-1B: 2)")
    p.add_argument("--no-reference", action="store_true", help="skip segment_anything's generator")
    p.add_argument("--fast", action="store_true", help="also run amg=sa1b_fast and compare it with the exact preset")
    p.add_argument(
        "--fast-override", action="append", default=[], help="with --fast: a setting of the fast side, amg.KEY=VALUE"
    )
    args = p.parse_args()
    sam2 = args.family == "sam2"
    args.variant = args.variant or ("sam2.1_hiera_t" if sam2 else "tiny")
    args.settings = args.settings or ("sam2-defaults" if sam2 else "sa1b")
    return args


def load_images(args) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{set name: [(image name, [H, W, 3] RGB)]}."""
    sets = {}
    for kind in args.images.split(","):
        if kind == "samples":
            root, names = list_inputs(args.input)[:2]
            sets[kind] = [(n, load_rgb(root / n, max_pixels=1 << 40)) for n in names[: args.limit]]
        elif kind == "1500":
            sets[kind] = [(f"scene-{i} (synthetic)", sa1b_sized_scene(i)) for i in range(args.limit_1500)]
        else:
            raise SystemExit(f"--images: unknown set {kind!r}")
    return sets


def sa1b_sized_scene(index: int) -> np.ndarray:
    """A synthetic scene of SA-1B's release size: both sides drawn in [1500, 2250] px, the shorter cut to 1500."""
    image = make_scene(7, index, 1500, 2250)["image"]
    return np.ascontiguousarray(image[:1500] if image.shape[0] <= image.shape[1] else image[:, :1500])


class StepTimer:
    """Exclusive wall time per step: a call inside another step's call counts for the inner step only."""

    def __init__(self, sam, device, extra=()):
        """extra: more (step, object, attribute) to time, e.g. the reference's own upsampling."""
        self.sam, self.cuda, self.extra = sam, device.type == "cuda", list(extra)
        self.totals = dict.fromkeys(STEPS, 0.0)
        self.stack = []

    def wrap(self, step, fn):
        def timed(*args, **kwargs):
            self.sync()
            self.stack.append([step, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                _, start, inner = self.stack.pop()
                spent = time.perf_counter() - start
                self.totals[step] += spent - inner
                if self.stack:
                    self.stack[-1][2] += spent

        return timed

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    @contextmanager
    def installed(self):
        targets = [(step, obj, name) for step, pairs in PATCHES.items() for obj, name in pairs]
        targets += [
            ("encoder", self.sam.image_encoder, "forward"),
            ("decoder", self.sam.mask_decoder, "forward"),
            ("upsampling", self.sam, "postprocess_masks"),
            *self.extra,
        ]
        saved = [(obj, name, obj.__dict__.get(name)) for _, obj, name in targets]
        for step, obj, name in targets:
            setattr(obj, name, self.wrap(step, getattr(obj, name)))
        try:
            yield self
        finally:
            for obj, name, old in saved:
                if old is None:
                    delattr(obj, name)
                else:
                    setattr(obj, name, old)

    def run(self, fn, image):
        """(seconds, output, peak memory in bytes) of fn(image), its steps added to the totals."""
        before = sum(self.totals.values())
        with self.installed(), PeakMemory(self.cuda) as peak:
            self.sync()
            start = time.perf_counter()
            out = call(fn, image)
            self.sync()
            seconds = time.perf_counter() - start
        self.totals["rest"] += seconds - (sum(self.totals.values()) - before)
        return seconds, out, peak.bytes


class PeakMemory:
    """Peak memory during a block: CUDA's allocator peak, or the rise of resident memory (sampled)."""

    def __init__(self, cuda: bool):
        self.cuda, self.bytes = cuda, 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self.peak, self.done = rss(), rss(), False
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self):
        while not self.done:
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.cuda:
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.done = True
            self.thread.join()
            self.bytes = max(self.peak, rss()) - self.base


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def call(fn, image):
    """SamAutomaticMaskGenerator raises IndexError when an image with crop layers has no mask at all."""
    try:
        return fn(image)
    except IndexError:
        return None


def reference_counts(out: list[dict] | None) -> list[str]:
    return [] if out is None else [r["segmentation"]["counts"] for r in out]


def agree(ref: list[dict] | None, ours: dict, height: int, width: int) -> tuple[bool, float]:
    """Same number of masks (and of empty ones) and every non-empty reference mask matched at IoU >= 0.99
    (returns the worst IoU): the check tests/test_generator_reference.py makes."""
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


def build_model(args):
    if args.variant == "tiny" or args.checkpoint:
        return build_sam(args.variant, checkpoint=args.checkpoint, device=args.device)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return seeded_sam(args.variant).to(device).eval()  # speed only: random weights


def print_steps(label: str, totals: dict, n: int):
    cells = "".join(f"{totals[s] / n:>11.3f}" for s in STEPS)
    print(f"  {label:<22}{cells}")


def reference_generator(sam, amg: dict, family: str):
    """segment_anything's SamAutomaticMaskGenerator, or for SAM 2.1 sam2's SAM2AutomaticMaskGenerator, with the
    settings both take; points_per_batch is its own default (a speed setting: ours may differ)."""
    if family == "sam2":
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        from data_engine.amg.sam2_generator import sam2_generator_settings
        from data_engine.model.sam2_model import Sam2Predictor

        settings = sam2_generator_settings(amg, exclude={"points_per_batch"})
        reference = SAM2AutomaticMaskGenerator(sam, output_mode="coco_rle", **settings)
        reference.predictor = Sam2Predictor(sam)  # its feature sizes for the model's input (written for 1024 px)
        return reference
    return SamAutomaticMaskGenerator(
        sam, output_mode="coco_rle", **sam_generator_settings(amg, exclude={"points_per_batch"})
    )


def bench(sam, images, amg: dict, args) -> bool:
    """Both generators on every image, alternating; prints per image and per step; True if all agree."""
    ours = mask_generator(sam, **amg)
    reference = None if args.no_reference else reference_generator(sam, amg, args.family)
    # Warm-up (allocators, first-call overheads) on a small image, untimed
    warm = images[0][1][:64, :64]
    call(ours.generate, warm)
    if reference:
        call(reference.generate, warm)
    extra = [("upsampling", reference.predictor._transforms, "postprocess_masks")] if args.family == "sam2" else []
    t_ours, t_ref = StepTimer(sam, ours.device), StepTimer(sam, ours.device, extra if reference else ())
    print(
        f"{'image':<26}{'size':>13}{'masks':>7}{'reference s':>13}{'ours s':>9}{'speed-up':>10}"
        f"{'ref peak MB':>13}{'ours peak MB':>14}  masks identical"
    )
    ok_all, rows = True, []
    for name, image in images:
        ref_s, ref_out, ref_mem = t_ref.run(reference.generate, image) if reference else (float("nan"), None, 0)
        ours_s, ours_out, ours_mem = t_ours.run(ours.generate, image)
        ok, worst = agree(ref_out, ours_out, *image.shape[:2]) if reference else (True, float("nan"))
        ok_all &= ok
        rows.append((ref_s, ours_s))
        print(
            f"{name[-26:]:<26}{str(image.shape[:2]):>13}{len(ours_out['segmentation']):>7}{ref_s:>13.2f}"
            f"{ours_s:>9.2f}{ref_s / ours_s:>9.2f}x{ref_mem / 2**20:>13.0f}{ours_mem / 2**20:>14.0f}  "
            f"{'yes' if ok else 'NO'} (worst IoU {worst:.3f})"
        )
    ref_mean, ours_mean = np.mean([r[0] for r in rows]), np.mean([r[1] for r in rows])
    print(f"{'mean seconds per image':<46}{ref_mean:>13.2f}{ours_mean:>9.2f}{ref_mean / ours_mean:>9.2f}x")
    print(f"  seconds per image by step {''.join(f'{s:>11}' for s in STEPS)}")
    if reference:
        print_steps("reference", t_ref.totals, len(images))
    print_steps("data_engine", t_ours.totals, len(images))
    return ok_all


def bench_fast(sam, images, exact: dict, fast: dict) -> None:
    """The fast preset against the exact one on the same images: time and agreement. Each preset gets the
    images as the automatic stage hands them over (images_per_batch at a time)."""
    gens = {"exact": mask_generator(sam, **exact), "fast": mask_generator(sam, **fast)}
    for g in gens.values():
        g.generate(images[0][1][:64, :64])
    seconds, outs = {k: 0.0 for k in gens}, {k: [] for k in gens}
    for key, g in gens.items():
        timer = StepTimer(sam, g.device)
        for i in range(0, len(images), g.images_per_batch):
            s, out, _ = timer.run(g.generate_batch, [image for _, image in images[i : i + g.images_per_batch]])
            seconds[key] += s / len(images)
            outs[key] += [o["segmentation"] for o in out]
    figures = agreement([(e, f, *img.shape[:2]) for e, f, (_, img) in zip(outs["exact"], outs["fast"], images)])
    exact_s, fast_s = seconds["exact"], seconds["fast"]
    print(
        f"  exact {exact_s:.3f} s/img, fast {fast_s:.3f} s/img, {exact_s / fast_s:.2f}x; "
        f"mean IoU of matched masks {figures['mean_matched_iou']:.4f} ({figures['matched']} matched at IoU >= 0.5), "
        f"images whose mask count differs {figures['count_differs']:.0%}, masks only in exact "
        f"{figures['only_a']}, only in fast {figures['only_b']}"
    )


def time_sam2_steps() -> None:
    """Time SAM2AutomaticMaskGenerator's filters, clean-up and RLE steps too (its module's own names)."""
    from data_engine.model.sam2_model import hydra_untouched

    with hydra_untouched():  # importing sam2 first sets up Hydra's global state; compose() needs it clear
        import sam2.automatic_mask_generator as sam2_amg

    for step, names in {
        "filters": ("calculate_stability_score", "batched_mask_to_box", "is_box_near_crop_edge", "batched_nms"),
        "clean-up": ("remove_small_regions",),
        "RLE": ("uncrop_masks", "mask_to_rle_pytorch", "rle_to_mask", "coco_encode_rle", "area_from_rle"),
    }.items():
        PATCHES[step] += [(sam2_amg, name) for name in names]


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    sets = load_images(args)
    sam = build_model(args)
    settings_of = SETTINGS_SAM2 if args.family == "sam2" else SETTINGS
    if args.family == "sam2":
        time_sam2_steps()
    base = compose(["amg=sam2" if args.family == "sam2" else "amg=reference"])["amg"]
    grid = {"points_per_side": args.points_per_side}
    print(
        f"model={args.variant}{'' if args.checkpoint or args.variant == 'tiny' else ' (seeded random weights)'} "
        f"device={sam.device} threads={torch.get_num_threads()} images={ {k: len(v) for k, v in sets.items()} } "
        f"points_per_side={args.points_per_side} crop layers (sa1b)={args.crop_layers}"
    )
    failed = False
    for setting in args.settings.split(","):
        amg = {**base, **settings_of[setting], **grid}
        if setting in ("sa1b", "crops"):
            amg["crop_n_layers"] = args.crop_layers
        for kind, images in sets.items():
            print(f"\n[{setting}, images: {kind}] { ({k: amg[k] for k in settings_of[setting] if k in amg} | grid) }")
            failed |= not bench(sam, images, amg, args)
    if args.fast:
        exact = compose(
            ["amg=sa1b", f"amg.points_per_side={args.points_per_side}", f"amg.crop_n_layers={args.crop_layers}"]
        )["amg"]
        fast = compose(
            ["amg=sa1b_fast", f"amg.points_per_side={args.points_per_side}", f"amg.crop_n_layers={args.crop_layers}"]
            + args.fast_override
        )["amg"]
        print(f"\n[amg=sa1b_fast against amg=sa1b] { ({k: v for k, v in fast.items() if exact[k] != v}) }")
        for kind, images in sets.items():
            print(f"  images: {kind}")
            bench_fast(sam, images, exact, fast)
    if failed:
        print("\nOUTPUTS DISAGREE: the timings above do not compare like with like", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
