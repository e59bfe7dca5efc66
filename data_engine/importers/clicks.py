"""Click-session files: per image, per object the annotator's ordered clicks and optional final mask.

    {"images": [{"file_name": "street/0001.jpg", "height": 480, "width": 640,
                 "objects": [{"id": "car-1", "clicks": [[320.5, 240.0, 1], [300, 262, 0]],
                              "final_mask": {"size": [480, 640], "counts": "..."},
                              "annotator": "ann07", "seconds": 14.2, "label": "car"}]}]}

Clicks are (x, y, 1 positive | 0 negative) in pixels of the image as loaded (EXIF orientation applied).
`final_mask` is COCO RLE (compressed or not), COCO polygons, or null; height/width are optional
checks; other object keys are kept as provenance. One report row per object.
"""

from __future__ import annotations

import math
from pathlib import Path

from data_engine.importers.coco import segmentation_counts
from data_engine.importers.results import Results, mask_row
from data_engine.importers.validate import ImageSizes, Rejected, Seen, safe_name
from data_engine.io import rle
from data_engine.io.inputs import InputError, read_json

OBJECT_KEYS = ("id", "clicks", "final_mask")


def read(
    path: str | Path, image_root: str | Path | None, max_pixels: int | None = None, follow_symlinks: bool = False
) -> tuple[list[dict], list[dict]]:
    """(objects ready to replay, report rows)."""
    path = Path(path).expanduser()
    images = load(path)
    res = Results("clicks")
    sizes = ImageSizes(Path(image_root).expanduser().resolve() if image_root else None, max_pixels, follow_symlinks)
    seen: dict[str, Seen] = {}
    for index, entry in enumerate(images):
        read_image(res, path, index, entry, sizes, seen)
    res.check()
    return res.rows, res.report


def load(path: Path) -> list:
    doc = read_json(path, "click-session file")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InputError(
            f"click-session file {path} needs an 'images' list; see docs/stages/assisted.md (click sessions) "
            "for the format"
        )
    return doc["images"]


def read_image(res: Results, path: Path, index: int, entry, sizes: ImageSizes, seen: dict) -> None:
    objects = entry.get("objects") if isinstance(entry, dict) else None
    if not isinstance(objects, list):
        res.expect(1)
        res.rejected(path, f"images[{index}]", None, "bad image entry: needs a file_name and an 'objects' list")
        return
    res.expect(len(objects))
    name = None
    try:
        name = safe_name(entry.get("file_name"))
        declared = (entry["height"], entry["width"]) if "height" in entry and "width" in entry else None
        height, width = sizes.check(name, declared)
    except Rejected as err:
        for i, obj in enumerate(objects):
            res.rejected(path, object_key(obj, i), name, str(err))
        return
    ids = seen.setdefault(name, Seen("object"))  # an image listed twice shares one id space
    for i, obj in enumerate(objects):
        read_object(res, path, i, obj, name, height, width, ids)


def object_key(obj, index: int) -> str:
    return str(obj.get("id")) if isinstance(obj, dict) and obj.get("id") is not None else f"objects[{index}]"


def read_object(res, path, index, obj, name, height, width, ids: Seen) -> None:
    key = object_key(obj, index)
    try:
        if not isinstance(obj, dict):
            raise Rejected(f"bad object: a {type(obj).__name__}, not a JSON object")
        ids.check(obj.get("id"), f"objects[{index}]")
        clicks = check_clicks(obj.get("clicks"), height, width)
        final, notes = final_counts(obj.get("final_mask"), height, width)
    except Rejected as err:
        res.rejected(path, key, name, str(err))
        return
    extra = {k: v for k, v in obj.items() if k not in OBJECT_KEYS}
    item = {
        "file_name": name,
        "height": height,
        "width": width,
        "id": obj.get("id", index),
        "clicks": clicks,
        "final_counts": final,
        "extra": extra,
    }
    res.accepted(path, key, name, item, notes)


def check_clicks(clicks, height: int, width: int) -> list[list]:
    """[[x, y, 1|0], ...] inside the image."""
    if not isinstance(clicks, list) or not clicks:
        raise Rejected("no clicks: an object needs at least one click [x, y, 1|0]")
    checked = []
    for k, click in enumerate(clicks):
        if not (
            isinstance(click, (list, tuple))
            and len(click) == 3
            and all(is_number(v) for v in click)
            and click[2] in (0, 1)
        ):
            raise Rejected(f"bad click: click {k} is {click!r}, expected [x, y, 1|0]")
        x, y, label = float(click[0]), float(click[1]), int(click[2])
        if not (0 <= x < width and 0 <= y < height):
            raise Rejected(f"click outside image: click {k} at ({x}, {y}) is outside {width}x{height}")
        checked.append([x, y, label])
    return checked


def final_counts(final, height: int, width: int) -> tuple[str | None, list[str]]:
    """The annotator's final mask as RLE counts (None when not given)."""
    if final is None:
        return None, []
    if not final or not isinstance(final, (dict, list)):
        raise Rejected("bad final mask: give COCO RLE {'size', 'counts'}, COCO polygons, or null")
    counts, notes = segmentation_counts(final, height, width)
    if rle.area([counts], height, width)[0] == 0:
        raise Rejected("empty mask: the final mask covers no pixel")
    return counts, notes


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def click_row(obj: dict, result: dict, model: str) -> dict:
    """The stored mask (the annotator's final mask if given, else the model's) as a source=click row."""
    final = obj.get("final_counts")
    counts = final or result["model_counts"]
    extra = {
        "format": "clicks",
        "original_id": obj["id"],
        **obj.get("extra", {}),
        "num_clicks": len(obj["clicks"]),
        "click_labels": [c[2] for c in obj["clicks"]],
        "iou_per_click": result["iou_per_click"],
        "predicted_iou_per_click": result["predicted_iou_per_click"],
        "final_mask": "annotator" if final else "model",
    }
    predicted = None if final else result["predicted_iou_per_click"][-1]
    return mask_row(
        obj["file_name"],
        obj["height"],
        obj["width"],
        counts,
        "click",
        extra,
        point_coords=[c[:2] for c in obj["clicks"]],
        model=model,
        predicted_iou=predicted,
    )
