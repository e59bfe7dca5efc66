"""How far `export.format=coco_polygons` moves masks, by `export.polygon_tolerance`.

Every object mask of synthetic scenes (the synth stage's generator) goes through the export's
conversion (data_engine/exports/polygons.py), is rasterised back by pycocotools (frPyObjects, merge,
decode) and compared with the mask: per tolerance, the mean and lowest IoU and the mean number of
polygon points per mask, once against the mask as it is and once against the mask with its holes
filled (COCO polygons cannot express holes, so the second isolates the simplification's cost).

    python benchmarks/polygon_tolerance.py [--scenes 10] [--seed 7] [--tolerances 0,0.5,1,2]
"""

from __future__ import annotations

import argparse

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from data_engine.exports.polygons import mask_polygons
from data_engine.synth import scenes as synth


def round_trip(mask: np.ndarray, tolerance: float) -> tuple[np.ndarray, int]:
    """(the bool [H, W] mask as polygons rasterised back by pycocotools, the polygons' point count)."""
    polygons, _ = mask_polygons(mask, tolerance)
    drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, *mask.shape)))
    return drawn.astype(bool), sum(len(p) for p in polygons) // 2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tolerances", default="0,0.5,1,2")
    args = p.parse_args()

    masks = [o["mask"] for i in range(args.scenes) for o in synth.make_scene(args.seed, i)["objects"]]
    with_holes = sum(not np.array_equal(m, ndimage.binary_fill_holes(m)) for m in masks)
    print(f"{len(masks)} masks, {with_holes} with holes, median area {int(np.median([m.sum() for m in masks]))} px")
    print("| tolerance (px) | IoU mean / min | IoU mean / min, holes filled | points per mask |")
    print("|---|---|---|---|")
    for tolerance in (float(t) for t in args.tolerances.split(",")):
        drawn, points = zip(*(round_trip(m, tolerance) for m in masks))
        raw = [iou(d, m) for d, m in zip(drawn, masks)]
        filled = [iou(d, ndimage.binary_fill_holes(m)) for d, m in zip(drawn, masks)]
        print(
            f"| {tolerance:g} | {np.mean(raw):.4f} / {np.min(raw):.4f} | {np.mean(filled):.4f} / {np.min(filled):.4f} "
            f"| {np.mean(points):.1f} |"
        )


if __name__ == "__main__":
    main()
