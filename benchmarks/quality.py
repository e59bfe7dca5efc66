"""Quality of a tiny SAM (the embedded one by default) on fresh synthetic scenes.

Prints four figures, with their targets:
  1. single-point prompt (the mask's innermost point), best of the 3 masks: mean IoU (>= 0.85);
  2. Pearson correlation of the predicted IoU with the true IoU over all 3 outputs (>= 0.5);
  3. fully-automatic stage (amg preset, default sa1b) on --auto-scenes scenes: fraction of
     ground-truth objects of at least 400 px recovered by some mask with IoU >= 0.75 (>= 0.80);
  4. masks per image of the automatic stage.
Also, without a target: mean IoU after each click of an interactive session (--clicks; the first
click at the innermost pixel, then at the largest error region, as SA-1B's tool was evaluated), and
the single-point figure by object size and level (whole, part, subpart).

    python benchmarks/quality.py [--checkpoint PATH] [--seed 1000] [--amg sa1b|tiny] [--set amg.KEY=VALUE]
                                 [--out quality.json]

The seed must differ from the training scenes' seed (the embedded model was trained on seed 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from data_engine.config import check_amg, compose
from data_engine.model.build import build_sam
from data_engine.synth import scenes as synth
from data_engine.train.evaluate import auto_figures, point_figures

TARGETS = {"point_miou": 0.85, "iou_correlation": 0.5, "auto_recall_400px_iou75": 0.80}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="tiny checkpoint (default: the embedded model)")
    parser.add_argument("--variant", default="tiny", help="model variant of the checkpoint")
    parser.add_argument("--seed", type=int, default=1000, help="scene seed; not the training seed (1)")
    parser.add_argument("--point-scenes", type=int, default=50, help="0: skip the single-point figures")
    parser.add_argument("--clicks", type=int, default=3, help="clicks per interactive session (0: skip)")
    parser.add_argument("--min-area", type=int, default=100, help="smallest object (px) given a point prompt")
    parser.add_argument("--auto-scenes", type=int, default=20, help="0: skip the automatic-stage figures")
    parser.add_argument("--amg", default="sa1b", help="generator preset in data_engine/conf/amg")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="amg.KEY=VALUE",
        help="config override on top of the preset, e.g. amg.crop_n_layers=0 (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sam = build_sam(args.variant, checkpoint=args.checkpoint)
    amg = compose([f"amg={args.amg}", *args.set])["amg"]
    check_amg(amg)  # a bad --set value gets the stage's own error, naming the key
    scenes = [synth.make_scene(args.seed, i) for i in range(max(args.point_scenes, args.auto_scenes))]
    with torch.no_grad():
        figures = (
            point_figures(sam, scenes[: args.point_scenes], args.min_area, args.clicks) if args.point_scenes else {}
        )
        if args.auto_scenes:  # 0: point figures only (a quick look at a checkpoint during training)
            figures.update(auto_figures(sam, scenes[: args.auto_scenes], amg))
    figures.update(
        seed=args.seed,
        checkpoint=args.checkpoint or "embedded",
        amg=args.amg,
        overrides=args.set,
        threads=torch.get_num_threads(),
    )
    for key, target in TARGETS.items():
        if key not in figures:
            continue
        print(f"{key:28s} {figures[key]:.3f}   (target >= {target}: {'met' if figures[key] >= target else 'MISSED'})")
    if "click_miou" in figures:
        print(f"{'click_miou (after 1, 2, ...)':28s} {' '.join(f'{v:.3f}' for v in figures['click_miou'])}")
    for group, value in figures.get("point_miou_by_group", {}).items():
        print(f"{'point_miou, ' + group:28s} {value:.3f}")
    if "point_under_half" in figures:
        print(f"{'objects under IoU 0.5':28s} {figures['point_under_half']:.3f}")
    if "masks_per_image" in figures:
        print(f"{'masks_per_image':28s} {figures['masks_per_image']:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
