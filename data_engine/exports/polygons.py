"""Masks as COCO polygons, for tools that read no RLE.

A polygon traces the mask's pixel edges (not the centres of its boundary pixels), so with no
simplification it rasterises back to the same pixels under pycocotools; `tolerance` (px) is then the
largest distance cv2.approxPolyDP may move the outline. COCO polygons of one annotation are a union
of outlines and cannot express a hole: a mask's holes are filled, and counted so that the export says
how many masks lost one.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from data_engine.io import rle

TOLERANCE = 0.5  # px: export.polygon_tolerance's default


def mask_polygons(mask: np.ndarray, tolerance: float = TOLERANCE) -> tuple[list[list[float]], int]:
    """(outlines of the bool [H, W] mask's components as flat [x0, y0, x1, y1, ...] lists in pixel-edge
    coordinates, the number of holes filled); an empty mask gives ([], 0)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return [], 0
    # Work inside the mask's box
    y0, x0 = rows[0], cols[0]
    crop = np.ascontiguousarray(mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1], dtype=np.uint8)
    # Pixel edges as a grid: the corners of a half-pixel grid that the mask touches
    corners = touched_corners(cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
    contours, hierarchy = cv2.findContours(corners, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    # Outer outlines only (no parent); the others are holes
    outer = [c for c, h in zip(contours, hierarchy[0]) if h[3] < 0]
    polygons = [simplified(c, 2 * tolerance) / 2 + (x0, y0) for c in outer]
    return [p.ravel().tolist() for p in polygons], len(contours) - len(outer)


def touched_corners(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H + 1, W + 1]: 1 at each pixel corner touched by a pixel of the uint8 [H, W] mask."""
    h, w = pixels.shape
    corners = np.zeros((h + 1, w + 1), np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            corners[dy : dy + h, dx : dx + w] |= pixels
    return corners


def simplified(contour: np.ndarray, epsilon: float) -> np.ndarray:
    """float [N, 2] outline within epsilon of the int [N, 1, 2] contour; kept whole when simplifying
    would leave fewer than 3 points (COCO needs a polygon of at least 3)."""
    points = cv2.approxPolyDP(contour, epsilon, closed=True) if epsilon > 0 else contour
    if len(points) < 3:
        points = contour
    return points.reshape(-1, 2).astype(np.float64)


def polygon_annotation(annotation: dict, tolerance: float = TOLERANCE) -> tuple[dict, float, int]:
    """(the COCO annotation with its RLE segmentation {'size', 'counts'} replaced by polygons, the IoU of
    the polygons with the mask, the holes filled). area and bbox stay the mask's."""
    height, width = annotation["segmentation"]["size"]
    counts = annotation["segmentation"]["counts"]
    polygons, holes = mask_polygons(rle.decode(counts, height, width), tolerance)
    iou = polygons_iou(polygons, counts, height, width) if polygons else 1.0  # no polygon: an empty mask
    return {**annotation, "segmentation": polygons}, iou, holes


def polygons_iou(polygons: list[list[float]], counts: str, height: int, width: int) -> float:
    """IoU of the polygons, rasterised as pycocotools does, with the mask of RLE counts."""
    drawn = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return float(mask_utils.iou([drawn], [rle.to_rle(counts, height, width)], [0])[0, 0])


def to_polygons(annotations: list[dict], tolerance: float = TOLERANCE) -> tuple[list[dict], dict]:
    """(the COCO annotations with polygon segmentations, what the conversion changed: the tolerance, the
    masks whose holes were filled, the mean and lowest IoU of polygons with mask)."""
    converted, ious, with_holes = [], [], 0
    for annotation in annotations:
        polygon, iou, holes = polygon_annotation(annotation, tolerance)
        converted.append(polygon)
        ious.append(iou)
        with_holes += holes > 0
    return converted, {
        "polygon_tolerance": tolerance,
        "masks_with_holes_filled": with_holes,
        "polygon_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
        "polygon_iou_min": round(float(np.min(ious)), 4) if ious else None,
    }
