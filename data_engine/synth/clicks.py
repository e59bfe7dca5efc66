"""Simulated stage-1 annotators: click sessions drawn from exact masks, in the assisted stage's click format.

SA-1B's annotators clicked foreground and background points in a SAM-backed tool, then fixed the mask
with brush and eraser. Here the clicks come from the exact mask alone (no model in the loop): a first
positive click near the middle of the object, then a few more, each either positive (on the part of the
object farthest from the clicks so far) or negative (just outside the object). Replaying them through
SAM (`stage=assisted`) shows how well a model follows an annotator's clicks.

Everything is drawn from `numpy.random.default_rng([seed, image_index, object_index])`, so a session is
the same on every machine.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_engine.io import coco


def inside_distance(mask: np.ndarray) -> np.ndarray:
    """[H, W] float: distance of each mask pixel to the nearest pixel outside it (0 outside)."""
    return cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]


def first_click(mask: np.ndarray, rng: np.random.Generator) -> list:
    """[x, y, 1] drawn among the pixels at least half as deep inside the object as its deepest pixel."""
    depth = inside_distance(mask)
    ys, xs = np.nonzero(depth >= 0.5 * depth.max())
    k = rng.integers(len(xs))
    return [int(xs[k]), int(ys[k]), 1]


def positive_click(mask: np.ndarray, clicks: list[list]) -> list | None:
    """[x, y, 1] on the object pixel that is deepest inside it and far from the clicks so far (the
    arm of a star, the second half of a thin shape); None once every object pixel is near a click."""
    depth = inside_distance(mask)
    away = np.ones(mask.shape, np.uint8)
    for x, y, _ in clicks:
        away[y, x] = 0
    distance = cv2.distanceTransform(away, cv2.DIST_L2, 5)
    score = np.minimum(depth, distance / 2)  # both deep inside and away from earlier clicks
    if score.max() < 1:
        return None
    y, x = np.unravel_index(score.argmax(), score.shape)
    return [int(x), int(y), 1]


def negative_click(mask: np.ndarray, rng: np.random.Generator) -> list | None:
    """[x, y, 0] in a band just outside the object (where a model's mask would leak); None when the
    object fills its surroundings."""
    width = max(2, int(round(0.1 * np.sqrt(mask.sum()))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    band = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    ys, xs = np.nonzero(band)
    if not len(xs):
        return None
    k = rng.integers(len(xs))
    return [int(xs[k]), int(ys[k]), 0]


def session(mask: np.ndarray, rng: np.random.Generator, max_clicks: int) -> list[list]:
    """An annotator's clicks on one object: [[x, y, 1|0], ...], 1 to max_clicks of them."""
    clicks = [first_click(mask, rng)]
    wanted = int(rng.integers(1, max_clicks + 1))
    while len(clicks) < wanted:
        click = negative_click(mask, rng) if rng.random() < 0.5 else positive_click(mask, clicks)
        if click is None or click in clicks:
            break
        clicks.append(click)
    return clicks


def image_sessions(image: dict, objects: list[dict], seed: int, index: int, max_clicks: int, final_mask: bool) -> dict:
    """One image entry of a click-session file. `image`: file_name, height, width; `objects`: id,
    mask ([H, W] bool) and counts (its COCO RLE, stored as the final mask when `final_mask`)."""
    entries = []
    for k, obj in enumerate(objects):
        rng = np.random.default_rng([seed, index, k])
        entries.append(
            {
                "id": obj["id"],
                "clicks": session(obj["mask"], rng, max_clicks),
                "final_mask": coco.segmentation(obj["counts"], image["height"], image["width"]) if final_mask else None,
                "annotator": "simulated",
            }
        )
    return {"file_name": image["file_name"], "height": image["height"], "width": image["width"], "objects": entries}


def click_images(names: list[str], fraction: float, seed: int) -> set[str]:
    """The images whose objects are annotated as click sessions: round(fraction * n) of them, drawn
    by a seeded permutation (the others are exported as COCO masks)."""
    order = np.random.default_rng([seed, len(names)]).permutation(len(names))
    return {names[i] for i in order[: int(round(fraction * len(names)))]}
