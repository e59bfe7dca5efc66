"""Quality figures of a SAM on synthetic scenes with exact masks (benchmarks/quality.py, tests).

Scenes are `synth.make_scene` dicts; each object's `mask` is the ground truth.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import torch
from segment_anything.utils.amg import build_point_grid

from data_engine.amg.generator import mask_generator
from data_engine.io import rle
from data_engine.model.click_replay import ClickReplayer


def innermost_point(mask: np.ndarray) -> np.ndarray:
    """(x, y) of the pixel farthest from the mask's boundary (SAM's single-point evaluation)."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(dist.argmax(), dist.shape)
    return np.array([x, y], dtype=np.float64)


def point_figures(sam, scenes: list[dict], min_area: int = 100, clicks: int = 0) -> dict:
    """Single point at the innermost pixel of each object of >= min_area px: mean best-of-3 IoU, and
    the correlation of predicted with true IoU over all 3 outputs. With clicks > 0, also interactive
    sessions of that many clicks on the same objects (click_session): mean IoU after each click.
    Also the single-point figure per object group (group_means) and the share of objects under 0.5."""
    replayer = ClickReplayer(sam)
    best, predicted, true, sessions, kinds = [], [], [], [], []
    for scene in scenes:
        replayer.predictor.set_image(scene["image"])  # one encoder pass serves both figures
        for obj in scene["objects"]:
            area = int(obj["mask"].sum())
            if area < min_area:
                continue
            kinds.append((area, obj["level"]))
            point = innermost_point(obj["mask"])[None]
            masks, scores, _ = replayer.predictor.predict(
                point_coords=point, point_labels=np.array([1]), multimask_output=True
            )
            ious = [rle.mask_iou(m, obj["mask"]) for m in masks]
            best.append(max(ious))
            predicted.extend(scores.tolist())
            true.extend(ious)
            if clicks:
                sessions.append(click_session(replayer, obj["mask"], clicks))
    figures = {
        "point_miou": float(np.mean(best)),
        "iou_correlation": float(np.corrcoef(predicted, true)[0, 1]),
        "point_prompts": len(best),
        "point_miou_by_group": group_means(best, kinds),
        "point_under_half": float(np.mean(np.array(best) < 0.5)),
    }
    if clicks:
        figures["click_miou"] = np.mean(sessions, axis=0).tolist()
    return figures


def group_means(ious: list[float], kinds: list[tuple[int, str]]) -> dict:
    """Mean IoU per object group: by area (under / from 400 px) and by level (whole, part, subpart);
    groups with no object are left out. `kinds` holds each object's (area, level)."""
    groups = {
        "under 400 px": lambda a, lv: a < 400,
        "400 px and more": lambda a, lv: a >= 400,
        "wholes": lambda a, lv: lv == "whole",
        "parts": lambda a, lv: lv == "part",
        "subparts": lambda a, lv: lv == "subpart",
    }
    means = {}
    for name, member in groups.items():
        picked = [iou for iou, (area, level) in zip(ious, kinds) if member(area, level)]
        if picked:
            means[name] = float(np.mean(picked))
    return means


def correction_click(mask: np.ndarray, target: np.ndarray) -> list:
    """[x, y, label] at the innermost pixel of the largest error region: positive on a missed region,
    negative on a false one (SAM's interactive evaluation)."""
    error = (mask ^ target).astype(np.uint8)
    _, regions, stats, _ = cv2.connectedComponentsWithStats(error, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y = innermost_point(regions == largest)
    return [x, y, int(target[int(y), int(x)])]


def click_session(replayer: ClickReplayer, target: np.ndarray, clicks: int) -> list[float]:
    """Interactive segmentation of one object as SA-1B's tool ran it (replay.ClickReplayer): a first
    click at the innermost pixel (of SAM's 3 masks, the one it rates best is kept), then correction
    clicks with the previous low-res logits fed back. IoU after each click (1.0 once exact)."""
    x, y = innermost_point(target)
    session, logits, ious = [[x, y, 1]], None, []
    while len(ious) < clicks:
        mask, _, logits = replayer.predict(session, logits)
        ious.append(rle.mask_iou(mask, target))
        if ious[-1] == 1.0:
            return ious + [1.0] * (clicks - len(ious))
        session.append(correction_click(mask, target))
    return ious


def grid_mask_ious(predictor, scene: dict, side: int = 32, batch: int = 64) -> tuple:
    """A side x side grid of point prompts (the automatic stage's, without crops) on one scene, through a
    SamPredictor: (predicted IoU, best IoU against the scene's objects) of the 3 masks of every point."""
    h, w = scene["height"], scene["width"]
    predictor.set_image(scene["image"])
    objects = torch.from_numpy(np.stack([o["mask"] for o in scene["objects"]])).to(predictor.device).float().flatten(1)
    grid = build_point_grid(side) * np.array([w, h])  # the generator's grid, in pixels
    predicted, true = [], []
    for start in range(0, len(grid), batch):
        points = torch.as_tensor(
            predictor.transform.apply_coords(grid[start : start + batch], (h, w)),
            dtype=torch.float,
            device=predictor.device,
        )
        labels = torch.ones(len(points), 1, device=predictor.device)
        masks, scores, _ = predictor.predict_torch(points[:, None], labels, multimask_output=True)
        masks = masks.flatten(0, 1).float().flatten(1)
        inter = masks @ objects.T
        union = masks.sum(1, keepdim=True) + objects.sum(1)[None] - inter
        predicted.append(scores.flatten().cpu().numpy())
        true.append((inter / union.clamp(min=1)).max(1).values.cpu().numpy())
    return np.concatenate(predicted), np.concatenate(true)


def auto_figures(sam, scenes: list[dict], amg: dict, min_area: int = 400, min_iou: float = 0.75) -> dict:
    """Fully-automatic generator with settings `amg`: fraction of objects of >= min_area px recovered
    by some mask with IoU >= min_iou, and masks per image."""
    generator = mask_generator(sam, **amg)
    found, total, counts, seconds = 0, 0, [], []
    for scene in scenes:
        start = time.time()
        out = generator.generate(scene["image"])
        seconds.append(time.time() - start)
        counts.append(len(out["segmentation"]))
        gt = [o["mask"] for o in scene["objects"] if o["mask"].sum() >= min_area]
        total += len(gt)
        if gt and out["segmentation"]:
            ious = rle.iou_matrix(rle.encode(np.stack(gt)), out["segmentation"], scene["height"], scene["width"])
            found += int((ious.max(1) >= min_iou).sum())
    return {
        "auto_recall_400px_iou75": found / max(total, 1),
        "auto_objects": total,
        "masks_per_image": float(np.mean(counts)),
        "auto_seconds_per_image": float(np.mean(seconds)),
    }
