"""Where the automatic stage loses its recall: per object of at least 400 px, the best IoU of any
mask the 32x32 grid's points give (all 3 outputs, no crops), then of those the preset's filters keep
(predicted IoU, stability, both), then what the whole stage keeps (NMS and clean-up included).
Tuning scenes (seed 500), not the quality seed 1000.

    python tools/tiny_model/recall_ceiling.py [--checkpoint PATH] [--variant tiny] [--amg sa1b] [--scenes 4]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.utils.amg import build_point_grid

from data_engine.amg.postprocess import stability_score, stability_thresholds
from data_engine.config import compose
from data_engine.model.build import build_sam
from data_engine.synth import scenes as synth
from data_engine.train.evaluate import auto_figures

MIN_AREA, IOU_LEVELS = 400, (0.75, 0.88)


def grid_masks(predictor: SamPredictor, scene: dict, amg: dict) -> tuple[torch.Tensor, ...]:
    """([P*3, H*W] bool masks, [P*3] predicted IoU, [P*3] stability) for the grid's points on one scene."""
    h, w = scene["height"], scene["width"]
    predictor.set_image(scene["image"])
    low, high = stability_thresholds(
        predictor.model.mask_threshold, tuple(amg["stability_levels"]), amg["stability_score_offset"]
    )
    points = build_point_grid(amg["points_per_side"]) * np.array([w, h])
    masks, preds, stable = [], [], []
    for start in range(0, len(points), amg["points_per_batch"]):
        coords = predictor.transform.apply_coords(points[start : start + amg["points_per_batch"]], (h, w))
        coords = torch.as_tensor(coords, dtype=torch.float)[:, None]
        logits, iou, _ = predictor.predict_torch(
            coords, torch.ones(len(coords), 1), multimask_output=True, return_logits=True
        )
        masks.append((logits > predictor.model.mask_threshold).flatten(0, 1).flatten(1))
        preds.append(iou.flatten())
        stable.append(stability_score(logits, low, high).flatten())
    return torch.cat(masks), torch.cat(preds), torch.cat(stable)


def best_ious(masks: torch.Tensor, objects: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[O]: each object's best IoU among the kept masks (0 when none is kept)."""
    m, o = masks[keep].float(), objects.float()
    if len(m) == 0:
        return torch.zeros(len(o))
    inter = m @ o.T
    union = m.sum(1, keepdim=True) + o.sum(1)[None] - inter
    return (inter / union.clamp(min=1)).amax(0)


def scene_rows(predictor: SamPredictor, scene: dict, amg: dict) -> np.ndarray:
    """[O, 4]: per object of >= MIN_AREA px, the best IoU under no filter, predicted IoU, stability, both."""
    objects = [o["mask"] for o in scene["objects"] if o["mask"].sum() >= MIN_AREA]
    if not objects:
        return np.zeros((0, 4))
    masks, preds, stable = grid_masks(predictor, scene, amg)
    confident, steady = preds >= amg["pred_iou_thresh"], stable >= amg["stability_score_thresh"]
    target = torch.from_numpy(np.stack(objects)).flatten(1)
    filters = [torch.ones_like(confident), confident, steady, confident & steady]
    return torch.stack([best_ious(masks, target, keep) for keep in filters], 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint of --variant (default: the embedded tiny model)")
    parser.add_argument("--variant", default="tiny", help="model variant of the checkpoint")
    parser.add_argument("--amg", default="sa1b", help="amg preset whose filters are applied")
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--scenes", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sam = build_sam(args.variant, checkpoint=args.checkpoint, device="cpu")
    amg = compose([f"amg={args.amg}", "amg.crop_n_layers=0"])["amg"]
    scenes = [synth.make_scene(args.seed, i) for i in range(args.scenes)]
    with torch.no_grad():
        rows = np.concatenate([scene_rows(SamPredictor(sam), s, amg) for s in scenes])
        stage = auto_figures(sam, scenes, amg)
    print(
        f"{len(rows)} objects of >= {MIN_AREA} px on {args.scenes} scenes of seed {args.seed}, amg={args.amg}, "
        f"no crops; fraction with a mask at IoU >= {IOU_LEVELS[0]} / {IOU_LEVELS[1]}:"
    )
    names = [
        "any grid mask",
        f"predicted IoU >= {amg['pred_iou_thresh']}",
        f"stability >= {amg['stability_score_thresh']}",
        "both filters",
    ]
    for name, column in zip(names, rows.T):
        print(f"  {name:28s} {np.mean(column >= IOU_LEVELS[0]):.3f} / {np.mean(column >= IOU_LEVELS[1]):.3f}")
    print(
        f"  {'the whole stage':28s} {stage['auto_recall_400px_iou75']:.3f} at {IOU_LEVELS[0]} "
        f"({stage['masks_per_image']:.1f} masks per image)"
    )


if __name__ == "__main__":
    main()
