"""Folders of PNG masks, matched to images under the image root by path without extension.

png_masks:  <annotations>/<image path without extension>/<any name>.png, one binary mask per file
            (non-zero in any channel is foreground); the layout SAM's scripts/amg.py writes.
png_labels: <annotations>/<image path without extension>.png, one instance-id label image per image:
            0 is background and every other value one mask; 8- and 16-bit grey, palette (255 is
            VOC's "void" border and skipped) and RGB (id = R + 256 G + 256^2 B, as COCO panoptic).
Without an image root the image is named by that path without extension and sized by the PNG.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from data_engine.importers.results import Results
from data_engine.importers.validate import ImageSizes, Rejected, mask_to_counts, read_mask
from data_engine.io.inputs import IMAGE_EXTENSIONS, InputError, scan_folder

VOC_VOID = 255


def read_masks(
    path: Path, image_root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False
) -> Results:
    """One binary PNG per mask; one report row per PNG file."""
    files, stems, sizes = scan(path, image_root, "png_masks", max_pixels, follow_symlinks)
    res = Results("png_masks")
    res.expect(len(files))
    for file in files:
        rel = file.relative_to(path)
        key, name = rel.as_posix(), None
        try:
            name = image_for(rel.parent.as_posix(), stems)
            mask, (height, width) = read_png(file, name, stems, sizes)
        except Rejected as err:
            res.rejected(file, key, name, str(err))
            continue
        res.add_mask(file, key, name, height, width, mask_to_counts(mask != 0), {"original_id": key})
    return res


def read_labels(
    path: Path, image_root: Path | None, max_pixels: int | None = None, follow_symlinks: bool = False
) -> Results:
    """One label image per image; one report row per instance id (or per unreadable file)."""
    files, stems, sizes = scan(path, image_root, "png_labels", max_pixels, follow_symlinks)
    res = Results("png_labels")
    for file in files:
        rel = file.relative_to(path)
        read_label_file(res, file, rel.with_suffix("").as_posix(), stems, sizes)
    return res


def read_label_file(res: Results, file: Path, stem: str, stems: dict, sizes: ImageSizes) -> None:
    name = None
    try:
        name = image_for(stem, stems)
        labels, (height, width) = read_png(file, name, stems, sizes, labels=True)
    except Rejected as err:
        res.expect(1)
        res.rejected(file, "(file)", name, str(err))
        return
    ids = [int(v) for v in np.unique(labels) if v != 0]
    res.expect(len(ids))
    for value in ids:
        counts = mask_to_counts(labels == value)
        res.add_mask(file, f"label {value}", name, height, width, counts, {"original_id": value})


def scan(path: Path, image_root: Path | None, fmt: str, max_pixels: int | None, follow_symlinks: bool):
    """(PNG files under `path`, image stem -> names under the root or None without a root, ImageSizes)."""
    if not path.is_dir():
        raise InputError(f"{path} is not a folder: the {fmt} format takes a folder of PNG files")
    files = [
        p
        for p in sorted(path.rglob("*"))
        if p.suffix.lower() == ".png"
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    return (
        files,
        image_stems(image_root, path) if image_root else None,
        ImageSizes(image_root, max_pixels, follow_symlinks),
    )


def image_stems(image_root: Path, masks: Path) -> dict:
    """Path without extension -> image names under the root (mask files under the root left out)."""
    names, _ = scan_folder(image_root, IMAGE_EXTENSIONS)
    inside = masks.resolve()
    stems = defaultdict(list)
    for name in names:
        if not (image_root / name).resolve().is_relative_to(inside):
            stems[name.rsplit(".", 1)[0]].append(name)
    return stems


def image_for(stem: str, stems: dict | None) -> str:
    """The one image under the root whose path without extension is `stem`; without a root, the stem."""
    if not stem or stem == ".":
        raise Rejected("unknown image: a mask file must lie in a folder named after its image")
    if stems is None:
        return stem
    found = stems.get(stem, [])
    if not found:
        raise Rejected(f"unknown image: no image named {stem or '(the top folder)'}.* under the image root")
    if len(found) > 1:
        raise Rejected(f"ambiguous image: {', '.join(found)} share the path {stem}")
    return found[0]


def read_png(file: Path, name: str, stems: dict | None, sizes: ImageSizes, labels: bool = False):
    """([H, W] values, the image's (H, W)): the PNG must have the image's size (without a root it sets
    it), checked from its header before it is decoded."""
    size = sizes.check(name, None) if stems is not None else None
    values = read_mask(file, size, sizes.max_pixels, lambda img: png_values(img, labels))
    return values, size or sizes.check(name, values.shape[:2])


def png_values(img: Image.Image, labels: bool) -> np.ndarray:
    """[H, W] values: non-zero test for masks, instance ids for label images."""
    mode, values = img.mode, np.asarray(img)
    if values.ndim == 3 and labels:
        rgb = values[..., :3].astype(np.int64)
        return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    if values.ndim == 3:
        return values.any(axis=2)
    if labels and mode == "P":
        return np.where(values == VOC_VOID, 0, values)
    return values
