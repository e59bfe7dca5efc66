"""Import human annotations from the tools people use, as mask rows plus a full import report.

`import_annotations(fmt, path, image_root)` -> (mask rows in `data_engine.io.dataset.MASK_SCHEMA` with
stage "assisted" and source "human", one report row per input annotation: imported or rejected
with its reason). Every importer reports each annotation of its input exactly once.
"""

from __future__ import annotations

from pathlib import Path

from data_engine.importers import coco, cvat_xml, labelme, labelstudio, png_masks
from data_engine.io.inputs import InputError

# Format name -> read(path, image_root, max_pixels, follow_symlinks) -> Results
FORMATS = {
    "coco": coco.read,
    "cvat_coco": coco.read_cvat,
    "cvat_xml": cvat_xml.read,
    "labelme": labelme.read,
    "labelstudio": labelstudio.read,
    "png_masks": png_masks.read_masks,
    "png_labels": png_masks.read_labels,
}


def import_annotations(
    fmt: str, path: str, image_root: str | None = None, max_pixels: int | None = None, follow_symlinks: bool = False
) -> tuple[list[dict], list[dict]]:
    """(mask rows, report rows) for the annotations of format `fmt` at `path`.

    `image_root`: the folder image file names are relative to; when given, every referenced image
    must exist there with the size the annotation declares. Without it declared sizes are trusted.
    `max_pixels` (input.max_pixels; default Pillow's decompression-bomb limit): annotations of larger
    images, and mask files claiming more pixels, are rejected before anything is decoded.
    `follow_symlinks` (input.follow_symlinks): without it, an annotation of an image that is a symlink
    leaving the image root is rejected (io.inputs.leaves_root: the rule of every stage reading images).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown annotation format {fmt!r}; choose one of {sorted(FORMATS)}")
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"annotations {path} do not exist: give the exported file or folder")
    root = Path(image_root).expanduser().resolve() if image_root else None
    if root is not None and not root.is_dir():
        raise InputError(f"image_root {image_root} is not a folder: give the folder holding the images")
    results = FORMATS[fmt](source, root, max_pixels, follow_symlinks)
    results.check()
    return results.rows, results.report
