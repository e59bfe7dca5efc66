"""Synthetic scenes with exact instance masks: test data, training data and an expert set for audits.

A scene is a background plus a stack of *layers* painted back to front. Each layer is a geometry (a
list of primitives added or cut out) filled with a solid colour, a gradient or a texture. An
annotated object owns one or more layers: a simple shape owns one; a composite object (house,
figure, flower) is a *whole* made of *parts*, some of which hold *subparts*. A pixel belongs to an
object when the topmost layer covering it is one of the object's layers, so masks are exact by
construction and occlusion is exact too. Lighting, noise and blur change the pixels, never the masks.

Everything is drawn from `numpy.random.default_rng([seed, index])`: scene `index` of a seed is the
same on every machine and independent of the other scenes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SIMPLE_SHAPES = ("ellipse", "rectangle", "polygon", "star", "thin", "concave", "ring")
COMPOSITES = ("house", "figure", "flower")
MIN_VISIBLE_AREA = 12  # objects with fewer visible pixels are not annotated


# ----------------------------------------------------------------------------------------------
# Geometry: primitives rasterized on the integer pixel grid (no anti-aliasing, so masks are exact)
# ----------------------------------------------------------------------------------------------


def rasterize(geometry: list, height: int, width: int) -> np.ndarray:
    """[H, W] bool mask of a geometry: a list of [op, primitive] with op '+' (add) or '-' (cut out)."""
    mask = np.zeros((height, width), dtype=bool)
    for op, prim in geometry:
        drawn = draw_primitive(prim, height, width)
        mask = mask | drawn if op == "+" else mask & ~drawn
    return mask


def draw_primitive(prim: dict, height: int, width: int) -> np.ndarray:
    """One primitive: {'poly': [[x, y], ...]}, {'ellipse': [cx, cy, ax, ay, deg]} or
    {'stroke': [[x, y], ...], 'width': px}."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    if "poly" in prim:
        cv2.fillPoly(canvas, [np.asarray(prim["poly"], dtype=np.int32)], 1, lineType=cv2.LINE_8)
    elif "ellipse" in prim:
        cx, cy, ax, ay, deg = prim["ellipse"]
        points = cv2.ellipse2Poly((int(cx), int(cy)), (max(int(ax), 1), max(int(ay), 1)), int(deg), 0, 360, 3)
        cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8)
    elif "stroke" in prim:
        cv2.polylines(
            canvas, [np.asarray(prim["stroke"], dtype=np.int32)], False, 1, int(prim["width"]), lineType=cv2.LINE_8
        )
    else:
        raise ValueError(f"unknown primitive {sorted(prim)}")
    return canvas.astype(bool)


def top_layer_map(layers: list[dict], height: int, width: int) -> np.ndarray:
    """[H, W] int: index of the topmost layer covering each pixel, -1 for background."""
    top = np.full((height, width), -1, dtype=np.int32)
    for i, layer in enumerate(layers):
        top[rasterize(layer["geometry"], height, width)] = i
    return top


# ----------------------------------------------------------------------------------------------
# Shapes: each returns a geometry centred at (cx, cy) with a size of about `r` pixels (radius)
# ----------------------------------------------------------------------------------------------


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def to_int_points(points: np.ndarray, cx: float, cy: float) -> list:
    return np.round(points + [cx, cy]).astype(int).tolist()


def shape_ellipse(rng, cx, cy, r) -> list:
    return [
        [
            "+",
            {"ellipse": [round(cx), round(cy), round(r), round(r * rng.uniform(0.35, 1.0)), int(rng.integers(0, 180))]},
        ]
    ]


def shape_rectangle(rng, cx, cy, r) -> list:
    w, h = r, r * rng.uniform(0.3, 1.0)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    angle = 0.0 if rng.random() < 0.5 else rng.uniform(0, math.pi)
    return [["+", {"poly": to_int_points(rotate(corners, angle), cx, cy)}]]


def shape_polygon(rng, cx, cy, r) -> list:
    n = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * rng.uniform(0.55, 1.0, n)
    points = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
    return [["+", {"poly": to_int_points(points, cx, cy)}]]


def shape_star(rng, cx, cy, r) -> list:
    n = int(rng.integers(4, 9))
    inner = rng.uniform(0.35, 0.6)
    angles = np.arange(2 * n) * math.pi / n + rng.uniform(0, math.pi)
    radii = np.where(np.arange(2 * n) % 2 == 0, r, r * inner)
    points = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
    return [["+", {"poly": to_int_points(points, cx, cy)}]]


def shape_thin(rng, cx, cy, r) -> list:
    """A thin bent stroke: lines, hooks and zigzags, 2 to 7 px wide."""
    n = int(rng.integers(2, 5))
    steps = rng.normal(0, 1, (n, 2))
    points = np.cumsum(steps, axis=0)
    points = (points - points.mean(0)) / (np.abs(points).max() + 1e-6) * r
    width = int(rng.integers(2, 8))
    return [["+", {"stroke": to_int_points(points, cx, cy), "width": width}]]


def shape_concave(rng, cx, cy, r) -> list:
    """An L or U polygon, or a crescent (a disc with a shifted disc cut out)."""
    kind = rng.integers(0, 3)
    if kind == 2:
        shift = rotate(np.array([[r * rng.uniform(0.35, 0.7), 0.0]]), rng.uniform(0, 2 * math.pi))[0]
        return [
            ["+", {"ellipse": [round(cx), round(cy), round(r), round(r), 0]}],
            ["-", {"ellipse": [round(cx + shift[0]), round(cy + shift[1]), round(r * 0.9), round(r * 0.9), 0]}],
        ]
    t = rng.uniform(0.3, 0.55)  # arm thickness as a fraction of the size
    if kind == 0:  # L
        points = np.array([[-1, -1], [-1 + 2 * t, -1], [-1 + 2 * t, 1 - 2 * t], [1, 1 - 2 * t], [1, 1], [-1, 1]])
    else:  # U
        points = np.array(
            [
                [-1, -1],
                [-1 + 2 * t, -1],
                [-1 + 2 * t, 1 - 2 * t],
                [1 - 2 * t, 1 - 2 * t],
                [1 - 2 * t, -1],
                [1, -1],
                [1, 1],
                [-1, 1],
            ]
        )
    return [["+", {"poly": to_int_points(rotate(points * r, rng.uniform(0, 2 * math.pi)), cx, cy)}]]


def shape_ring(rng, cx, cy, r) -> list:
    """An annulus: an object with a hole."""
    inner = rng.uniform(0.35, 0.7)
    return [
        ["+", {"ellipse": [round(cx), round(cy), round(r), round(r), 0]}],
        ["-", {"ellipse": [round(cx), round(cy), round(r * inner), round(r * inner), 0]}],
    ]


SHAPE_FUNCS = {
    "ellipse": shape_ellipse,
    "rectangle": shape_rectangle,
    "polygon": shape_polygon,
    "star": shape_star,
    "thin": shape_thin,
    "concave": shape_concave,
    "ring": shape_ring,
}


# ----------------------------------------------------------------------------------------------
# Composite objects: a whole made of parts, parts holding subparts
# ----------------------------------------------------------------------------------------------


def node(shape: str, level: str, geometry: list, children=()) -> dict:
    """A tree node: its own layer (geometry, may be empty for a pure group) and its child nodes."""
    return {"shape": shape, "level": level, "geometry": geometry, "children": list(children)}


def composite_house(rng, cx, cy, r) -> dict:
    w, h = r, r * rng.uniform(0.5, 0.8)
    body = [["+", {"poly": to_int_points(np.array([[-w, -h * 0.2], [w, -h * 0.2], [w, h], [-w, h]]), cx, cy)}]]
    roof = [
        [
            "+",
            {
                "poly": to_int_points(
                    np.array([[-w * 1.15, -h * 0.2], [w * 1.15, -h * 0.2], [0, -h * 0.2 - r * rng.uniform(0.5, 0.9)]]),
                    cx,
                    cy,
                )
            },
        ]
    ]
    windows = []
    for x in rng.choice([-0.6, 0.0, 0.6], size=int(rng.integers(1, 3)), replace=False):
        s = w * 0.18
        windows.append(
            node(
                "window",
                "subpart",
                [
                    [
                        "+",
                        {
                            "poly": to_int_points(
                                np.array([[-s, -s], [s, -s], [s, s], [-s, s]]) + [x * w, h * 0.25], cx, cy
                            )
                        },
                    ]
                ],
            )
        )
    return node("house", "whole", [], [node("body", "part", body, windows), node("roof", "part", roof)])


def composite_figure(rng, cx, cy, r) -> dict:
    head_r = r * rng.uniform(0.3, 0.4)
    body = [["+", {"ellipse": [round(cx), round(cy + r * 0.3), round(r * 0.45), round(r * 0.7), 0]}]]
    head_y = cy - r * 0.4 - head_r * 0.8
    head = [["+", {"ellipse": [round(cx), round(head_y), round(head_r), round(head_r), 0]}]]
    eye = max(round(head_r * 0.2), 1)
    eyes = [
        node(
            "eye",
            "subpart",
            [["+", {"ellipse": [round(cx + dx * head_r), round(head_y - head_r * 0.15), eye, eye, 0]}]],
        )
        for dx in (-0.4, 0.4)
    ]
    arm_w = max(int(r * 0.12), 2)
    arms = [
        node(
            "arm",
            "part",
            [
                [
                    "+",
                    {
                        "stroke": to_int_points(
                            np.array([[0.3 * side, 0.0], [0.9 * side, rng.uniform(-0.5, 0.5)]]) * r, cx, cy
                        ),
                        "width": arm_w,
                    },
                ]
            ],
        )
        for side in (-1, 1)
    ]
    return node("figure", "whole", [], arms + [node("body", "part", body), node("head", "part", head, eyes)])


def composite_flower(rng, cx, cy, r) -> dict:
    n = int(rng.integers(4, 8))
    start = rng.uniform(0, 2 * math.pi)
    petals = []
    for k in range(n):
        a = start + 2 * math.pi * k / n
        px, py = cx + math.cos(a) * r * 0.55, cy + math.sin(a) * r * 0.55
        petals.append(
            node(
                "petal",
                "part",
                [
                    [
                        "+",
                        {
                            "ellipse": [
                                round(px),
                                round(py),
                                round(r * 0.45),
                                round(r * 0.2),
                                int(math.degrees(a)) % 180,
                            ]
                        },
                    ]
                ],
            )
        )
    center = node("center", "part", [["+", {"ellipse": [round(cx), round(cy), round(r * 0.3), round(r * 0.3), 0]}]])
    return node("flower", "whole", [], petals + [center])


COMPOSITE_FUNCS = {"house": composite_house, "figure": composite_figure, "flower": composite_flower}


# ----------------------------------------------------------------------------------------------
# Paint: fills, background, lighting and noise
# ----------------------------------------------------------------------------------------------


def random_colour(rng) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def smooth_noise(rng, height: int, width: int, cells: int) -> np.ndarray:
    """[H, W] smooth random field in about [0, 1]: a coarse random grid upsampled."""
    grid = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def fill(rng, height: int, width: int) -> np.ndarray:
    """[H, W, 3] float32 paint: solid (half the time), linear gradient, stripes or blotches."""
    base = random_colour(rng)
    kind = rng.choice(["solid", "solid", "gradient", "stripes", "blotches"])
    if kind == "solid":
        return np.broadcast_to(base, (height, width, 3))
    other = np.clip(base + rng.normal(0, 60, 3), 0, 255).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    if kind == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == "stripes":
        t = 0.5 + 0.5 * np.sin(along * 2 * math.pi / rng.uniform(4, 16))
    else:
        t = smooth_noise(rng, height, width, int(rng.integers(3, 8)))
    return base + t[..., None] * (other - base)


def background(rng, height: int, width: int) -> np.ndarray:
    """[H, W, 3] float32: any fill, sometimes with faint fine texture."""
    image = np.array(fill(rng, height, width), dtype=np.float32)
    if rng.random() < 0.3:
        image += (smooth_noise(rng, height, width, int(rng.integers(16, 48)))[..., None] - 0.5) * 40
    return image


def finish(rng, image: np.ndarray) -> np.ndarray:
    """Lighting (a smooth multiplicative field), sensor noise and sometimes a slight blur -> uint8."""
    height, width = image.shape[:2]
    light = 0.75 + 0.45 * smooth_noise(rng, height, width, 3)
    image = image * light[..., None]
    image = image + rng.normal(0, rng.uniform(0, 8), image.shape).astype(np.float32)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


def make_scene(seed: int, index: int, min_size: int = 256, max_size: int = 512, max_objects: int = 12) -> dict:
    """One scene: {'image': [H, W, 3] uint8, 'height', 'width', 'layers', 'objects'}.

    `objects` are the annotated masks: {'mask', 'shape', 'level', 'parent' (index in objects or
    None), 'layers' (indices into layers)}; a whole comes before its parts, a part before its subparts.
    """
    rng = np.random.default_rng([seed, index])
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    trees = place_objects(rng, height, width, max_objects)
    layers, owners = flatten(trees)
    image = paint(rng, layers, height, width)
    top = top_layer_map(layers, height, width)
    objects = annotate(owners, top)
    return {"image": image, "height": height, "width": width, "layers": layers, "objects": objects}


def place_objects(rng, height: int, width: int, max_objects: int) -> list[dict]:
    """Object trees in paint order: larger objects mostly first, so small ones stay visible."""
    trees = []
    for _ in range(int(rng.integers(3, max_objects + 1))):
        r = math.exp(rng.uniform(math.log(4), math.log(0.35 * min(height, width))))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.25 and r > 14:
            name = str(rng.choice(COMPOSITES))
            tree = COMPOSITE_FUNCS[name](rng, cx, cy, r)
        else:
            name = str(rng.choice(SIMPLE_SHAPES))
            tree = node(name, "whole", SHAPE_FUNCS[name](rng, cx, cy, r))
        trees.append((r * math.exp(rng.normal(0, 0.5)), tree))
    return [tree for _, tree in sorted(trees, key=lambda t: -t[0])]


def flatten(trees: list[dict]) -> tuple[list[dict], list[dict]]:
    """Layers in paint order (a parent's own layer below its children) and, per tree node, the
    layer indices it owns (its own and all its descendants')."""
    layers, owners = [], []

    def visit(tree: dict, parent: int | None) -> list[int]:
        me = len(owners)
        owners.append({"shape": tree["shape"], "level": tree["level"], "parent": parent, "layers": []})
        own = []
        if tree["geometry"]:
            own.append(len(layers))
            layers.append({"geometry": tree["geometry"]})
        for child in tree["children"]:
            own.extend(visit(child, me))
        owners[me]["layers"] = own
        return own

    for tree in trees:
        visit(tree, None)
    return layers, owners


def paint(rng, layers: list[dict], height: int, width: int) -> np.ndarray:
    """Background, then each layer's fill through its mask, then lighting and noise."""
    image = background(rng, height, width)
    for layer in layers:
        mask = rasterize(layer["geometry"], height, width)
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        region = mask[y0:y1, x0:x1]
        image[y0:y1, x0:x1][region] = fill(rng, y1 - y0, x1 - x0)[region]
    return finish(rng, image)


def annotate(owners: list[dict], top: np.ndarray) -> list[dict]:
    """Visible mask of each node; drop tiny ones and children identical to their parent."""
    objects, index_of = [], {}
    for i, owner in enumerate(owners):
        mask = np.isin(top, owner["layers"])
        if mask.sum() < MIN_VISIBLE_AREA:
            continue
        parent = index_of.get(owner["parent"]) if owner["parent"] is not None else None
        if parent is not None and np.array_equal(mask, objects[parent]["mask"]):
            index_of[i] = parent  # same pixels as its parent: one annotation stands for both
            continue
        index_of[i] = len(objects)
        objects.append(
            {
                "mask": mask,
                "shape": owner["shape"],
                "level": owner["level"],
                "parent": parent,
                "layers": owner["layers"],
            }
        )
    return objects
