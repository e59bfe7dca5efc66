"""A SAM (the embedded tiny model by default) on real photographs that ship offline with scikit-image.

The expert masks are not from professional annotators: they come from classical segmentation of
photos simple enough for it (smoothing, a local threshold, hole filling, labelling), and were
checked by eye on the overlay that --overlay writes. Photos:
  coins: skimage.data.coins(), 24 ancient coins on a plain dark background (303x384, grey);
  coffee: skimage.data.coffee(), a cup of espresso on a saucer on a wooden table (400x600): one
    object, the cup's mouth (its white rim and all inside it); the cup, saucer and spoon have edges
    too weak for a threshold, so they are not in the expert set.
Coins on a plain background are close to a best case for a model trained on synthetic scenes.

Prints, over all photos:
  - the number of expert objects;
  - the fully-automatic stage (--amg preset; tiny by default, the embedded model's thresholds):
    recall at IoU 0.5 and 0.75 (share of expert masks that some generated mask matches at that IoU)
    and masks per image;
  - click replay: mean IoU after each click, the first click at the mask's innermost pixel, each
    next one at the innermost pixel of the largest error region (as benchmarks/quality.py does).

    python benchmarks/real_photos.py [--checkpoint PATH] [--variant tiny] [--amg tiny] [--clicks 2]
                                     [--overlay DIR] [--out real_photos.json]

Needs scikit-image (in the test extra). For real datasets use an official checkpoint
(--variant vit_h --checkpoint sam_vit_h_4b8939.pth).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi

from data_engine.amg.generator import MaskGenerator
from data_engine.config import check_amg, compose
from data_engine.io import rle
from data_engine.io.overlays import draw
from data_engine.model.build import build_sam
from data_engine.model.click_replay import ClickReplayer
from data_engine.train.evaluate import click_session


def coins() -> tuple[np.ndarray, list[np.ndarray]]:
    """skimage's coins photo as [H, W, 3] RGB and one boolean mask per coin."""
    from skimage import data, filters, measure, morphology, segmentation

    grey = data.coins()
    smooth = filters.gaussian(grey, sigma=2, preserve_range=True)
    # A local threshold: the background brightens towards the bottom of the picture
    fg = smooth > filters.threshold_local(smooth, block_size=101, offset=-5)
    fg = ndi.binary_fill_holes(morphology.opening(fg, morphology.disk(3)))
    # Bright bands along the top edge are lighting, not coins
    labels = segmentation.clear_border(measure.label(fg))
    masks = [labels == r.label for r in measure.regionprops(labels) if r.area >= 200]
    return np.repeat(grey[..., None], 3, axis=2), masks


def coffee() -> tuple[np.ndarray, list[np.ndarray]]:
    """skimage's coffee photo and one mask: the cup's mouth (the white rim, filled)."""
    from skimage import color, data, measure, morphology

    rgb = data.coffee()
    hsv = color.rgb2hsv(rgb)
    # The rim is the largest bright, unsaturated region; everything it encloses is the mouth
    white = morphology.opening((hsv[..., 1] < 0.25) & (hsv[..., 2] > 0.5), morphology.disk(2))
    labels = measure.label(white)
    rim = labels == max(measure.regionprops(labels), key=lambda r: r.area).label
    return rgb, [ndi.binary_fill_holes(rim)]


PHOTOS = {"coins": coins, "coffee": coffee}


def auto_ious(generator: MaskGenerator, image: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Best IoU of each expert mask with any generated mask, and the generated masks (RLE counts)."""
    out = generator.generate(image)
    h, w = image.shape[:2]
    if not out["segmentation"]:
        return np.zeros(len(masks)), []
    ious = rle.iou_matrix(rle.encode(np.stack(masks)), out["segmentation"], h, w)  # [experts, generated]
    return ious.max(1), out["segmentation"]


def write_overlays(folder: Path, name: str, image: np.ndarray, experts: list, generated: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    pictures = {"expert": experts, "auto": [rle.decode(c, h, w) for c in generated]}
    for kind, masks in pictures.items():
        picture = draw(image, masks) if masks else image
        cv2.imwrite(str(folder / f"{name}_{kind}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: the embedded tiny model)")
    parser.add_argument("--variant", default="tiny", help="model variant (tiny, vit_b, vit_l, vit_h)")
    parser.add_argument("--amg", default="tiny", help="generator preset in data_engine/conf/amg")
    parser.add_argument("--clicks", type=int, default=2, help="clicks per interactive session")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--overlay", default=None, help="write expert and generated masks over each photo here")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sam = build_sam(args.variant, checkpoint=args.checkpoint)
    amg = compose([f"amg={args.amg}"])["amg"]
    check_amg(amg)
    generator, replayer = MaskGenerator(sam, **amg), ClickReplayer(sam)

    best, sessions, counts, seconds = [], [], [], []
    with torch.no_grad():
        for name, load in PHOTOS.items():
            image, masks = load()
            start = time.time()
            ious, generated = auto_ious(generator, image, masks)
            seconds.append(time.time() - start)
            best.extend(ious.tolist())
            counts.append(len(generated))
            replayer.predictor.set_image(image)
            photo_sessions = [click_session(replayer, m, args.clicks) for m in masks]
            sessions.extend(photo_sessions)
            if args.overlay:
                write_overlays(Path(args.overlay), name, image, masks, generated)
            clicks = " ".join(f"{v:.3f}" for v in np.mean(photo_sessions, axis=0))
            print(
                f"{name}: {len(masks)} objects, found at IoU 0.5: {int((ious >= 0.5).sum())}, at 0.75: "
                f"{int((ious >= 0.75).sum())}; {len(generated)} generated masks in {seconds[-1]:.1f} s; "
                f"click mean IoU {clicks}"
            )

    best = np.array(best)
    figures = {
        "photos": list(PHOTOS),
        "objects": len(best),
        "auto_recall_iou50": float((best >= 0.5).mean()),
        "auto_recall_iou75": float((best >= 0.75).mean()),
        "auto_found_iou50": int((best >= 0.5).sum()),
        "auto_found_iou75": int((best >= 0.75).sum()),
        "masks_per_image": float(np.mean(counts)),
        "auto_seconds_per_image": float(np.mean(seconds)),
        "click_miou": np.mean(sessions, axis=0).tolist(),
        "variant": args.variant,
        "checkpoint": args.checkpoint or "embedded",
        "amg": args.amg,
        "threads": torch.get_num_threads(),
    }
    print(f"objects                      {figures['objects']}")
    for t in ("50", "75"):
        found, recall = figures[f"auto_found_iou{t}"], figures[f"auto_recall_iou{t}"]
        print(f"auto recall at IoU 0.{t}       {recall:.3f} ({found} of {figures['objects']})")
    print(f"masks per image              {figures['masks_per_image']:.1f}")
    print(f"click mean IoU (after 1, 2…) {' '.join(f'{v:.3f}' for v in figures['click_miou'])}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
