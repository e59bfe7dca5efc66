"""Boxes, ellipses and circles as polygons, so every shape is rasterised by the same COCO rule."""

from __future__ import annotations

import math

from data_engine.importers.validate import Rejected

ELLIPSE_VERTICES = 72


def box_polygon(x0: float, y0: float, x1: float, y1: float, rotation: float = 0.0, pivot: str = "center") -> list:
    """Flat polygon of a box with corners (x0, y0)-(x1, y1), rotated `rotation` degrees clockwise
    (image y points down) about its center (CVAT) or its first corner (Label Studio)."""
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, rotation)):
        raise Rejected("degenerate box: non-finite coordinates")
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        raise Rejected(f"degenerate box: zero width or height ({x0}, {y0}, {x1}, {y1})")
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    cx, cy = ((x0 + x1) / 2, (y0 + y1) / 2) if pivot == "center" else (x0, y0)
    return [v for x, y in corners for v in rotate(x, y, cx, cy, rotation)]


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, rotation: float = 0.0) -> list:
    """Flat polygon approximating an ellipse (radii rx, ry) rotated `rotation` degrees clockwise."""
    if not all(math.isfinite(v) for v in (cx, cy, rx, ry, rotation)):
        raise Rejected("degenerate ellipse: non-finite coordinates")
    if rx <= 0 or ry <= 0:
        raise Rejected(f"degenerate ellipse: radius {rx} x {ry}")
    points = []
    for k in range(ELLIPSE_VERTICES):
        t = 2 * math.pi * k / ELLIPSE_VERTICES
        points.extend(rotate(cx + rx * math.cos(t), cy + ry * math.sin(t), cx, cy, rotation))
    return points


def circle_polygon(center, on_circle) -> list:
    """LabelMe's circle: its center and one point on the circle."""
    (cx, cy), (px, py) = center, on_circle
    r = math.hypot(px - cx, py - cy)
    return ellipse_polygon(cx, cy, r, r)


def rotate(x: float, y: float, cx: float, cy: float, degrees: float) -> tuple[float, float]:
    """Rotate (x, y) about (cx, cy) clockwise on screen (y down)."""
    if not degrees:
        return x, y
    a = math.radians(degrees)
    dx, dy = x - cx, y - cy
    return cx + dx * math.cos(a) - dy * math.sin(a), cy + dx * math.sin(a) + dy * math.cos(a)
