"""Training examples for SAM: images and their masks from Parquet datasets or COCO files, brought
to the model's input frame (SAM: long side resized to the encoder size, padded at the bottom-right;
SAM 2.1: resized to the square input)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from data_engine.errors import UserError
from data_engine.importers import coco as coco_import
from data_engine.importers.results import REJECTED
from data_engine.io import rle
from data_engine.io.dataset import Dataset
from data_engine.io.images import ImageError, load_rgb

MIN_FRAME_AREA = 20  # masks smaller than this many pixels in the model frame are skipped


class TrainDataError(UserError, ValueError):
    """A training source cannot be used; the message says what to do."""


def load_sources(
    paths: list[str],
    image_root: str | None,
    img_size: int,
    max_images: int | None = None,
    section: str = "train",
    square: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Examples from every source: {'image': [3, h, w] uint8 tensor, 'masks': RLE counts in the
    img_size x img_size frame, 'file_name', 'small_masks': how many of its masks were too small}
    (`square`: images resized to the square frame, as SAM 2.1's input; else as SAM's),
    and what was left out: images {'source', 'file_name', 'reason'} (missing, unreadable, or no mask
    of MIN_FRAME_AREA px in the frame, or a COCO image entry that cannot be used) and COCO annotations
    {..., 'annotation': id, 'reason'} that stage 1's importer rejects. A run loses no image or
    annotation silently. Messages name the keys of the stage's config `section` (SECTION.data,
    SECTION.image_root)."""
    examples, skipped = [], []
    for path in paths:
        for root, file_name, masks, bad, unusable in list_source(Path(path).expanduser(), image_root, section):
            if max_images is not None and len(examples) >= max_images:
                return examples, skipped
            skipped.extend(
                {"source": path, "file_name": file_name, "annotation": ann, "reason": reason} for ann, reason in bad
            )
            if file_name is None:  # annotations of no listed image
                continue
            example, reason = (
                (None, unusable)
                if unusable
                else load_example(root / file_name, masks, img_size, len(bad), section, square)
            )
            if example:
                examples.append({**example, "file_name": file_name})
            else:
                skipped.append({"source": path, "file_name": file_name, "reason": reason})
    if not examples:
        first = f"; first left out: {skipped[0]['file_name']}: {skipped[0]['reason']}" if skipped else ""
        raise TrainDataError(
            f"{section}.data={paths}: no image with a mask of at least {MIN_FRAME_AREA} px was found{first}"
        )
    return examples, skipped


def load_example(
    path: Path, masks: list[tuple], img_size: int, rejected: int = 0, section: str = "train", square: bool = False
) -> tuple[dict | None, str | None]:
    """(example, None), or (None, why the image cannot be trained on); `rejected`: how many of its
    annotations were left out."""
    if not masks:
        return None, (
            f"none of its {rejected} annotations could be used" if rejected else "the source has no mask for it"
        )
    try:
        example = to_frame(path, masks, img_size, section, square)
    except (ImageError, TrainDataError) as e:
        return None, f"{type(e).__name__}: {e}"
    if not example["masks"]:
        return None, f"none of its {len(masks)} masks covers {MIN_FRAME_AREA} px at the model's {img_size}-px input"
    return example, None


def list_source(path: Path, image_root: str | None, section: str):
    """Yield (image root, file name, [(counts, height, width)], [(annotation id, reason)], why the image
    entry itself cannot be used or None) per image."""
    if path.is_dir() and (path / "masks").is_dir():
        yield from parquet_source(path, image_root, section)
    elif path.is_file() and path.suffix == ".json":
        yield from coco_source(path, image_root)
    else:
        raise TrainDataError(
            f"{section}.data: {path} is neither a data-engine output folder (with masks/) "
            "nor a COCO instances .json file"
        )


def parquet_source(path: Path, image_root: str | None, section: str):
    """Masks of any stage's output; images from image_root, the run's input folder, or pictures/.
    Images of the output's images table without a mask (failed ones too) come with no masks."""
    dataset = open_dataset(path, image_root, section)
    root = dataset.image_root
    table = dataset.masks(columns=["file_name", "height", "width", "segmentation"]).to_pylist()
    by_file: dict[str, list] = {name: [] for name in dataset.images(columns=["file_name"])["file_name"].to_pylist()}
    for row in table:
        by_file.setdefault(row["file_name"], []).append((row["segmentation"], row["height"], row["width"]))
    for name in sorted(by_file):
        yield root, name, by_file[name], [], None


def parquet_image_root(path: Path, section: str = "train") -> Path:
    return open_dataset(path, None, section).image_root


def open_dataset(path: Path, image_root: str | None, section: str = "train") -> Dataset:
    """The dataset with its images under image_root, or where its run read them; a TrainDataError when
    neither is known."""
    dataset = Dataset.open(path, f"{section}.data", image_root=image_root)
    if dataset.image_root is None:
        raise TrainDataError(
            f"{section}.data: cannot tell where the images of {path} are; pass {section}.image_root=FOLDER"
        )
    return dataset


def coco_source(path: Path, image_root: str | None):
    """COCO instances read as stage 1 imports them (`importers.coco`: declared image sizes trusted);
    images next to the file, in pictures/ beside it, or in image_root. Rejected annotations come with
    their image as (annotation id, reason); those of no usable image entry come last, under file name
    None. Images listed without a usable annotation come with no masks."""
    doc = coco_import.load_document(path)
    results = coco_import.import_document(doc, path, None)
    root = (
        Path(image_root).expanduser()
        if image_root
        else (path.parent / "pictures" if (path.parent / "pictures").is_dir() else path.parent)
    )
    names, unusable = image_entries(doc["images"])
    masks: dict[str, list] = {name: [] for name in names}
    for row in results.rows:
        masks.setdefault(row["file_name"], []).append((row["segmentation"], row["height"], row["width"]))
    bad: dict[str | None, list] = {}
    for r in results.report:
        if r["status"] == REJECTED:
            bad.setdefault(r["image"] if r["image"] in masks else None, []).append((r["annotation"], r["reason"]))
    for name in sorted(masks):
        yield root, name, masks[name], bad.pop(name, []), None
    for name, reason in unusable:
        yield root, name, [], [], reason
    if None in bad:
        yield root, None, [], bad[None], None


def image_entries(entries: list) -> tuple[list[str], list[tuple[str, str]]]:
    """A COCO 'images' list as stage 1's importer reads it: (file names of the usable entries,
    [(file name as given, reason)] for the others: not an object, no usable id, a repeated id, an
    unsafe file name)."""
    table = coco_import.image_table(entries)
    names = [entry["file_name"] for entry in table.values() if isinstance(entry, dict)]
    unusable = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            unusable.append((f"images[{index}]", f"bad image entry: a {type(entry).__name__}, not a JSON object"))
        elif not isinstance(entry.get("id"), (int, str)):
            reason = f"bad image entry: id {entry.get('id')!r} is not an integer or string"
            unusable.append((str(entry.get("file_name")), reason))
        elif isinstance(table[entry["id"]], str):
            unusable.append((str(entry.get("file_name")), table[entry["id"]]))
    return names, unusable


def to_frame(path: Path, masks: list[tuple], img_size: int, section: str, square: bool = False) -> dict:
    """Resize the image as SAM's ResizeLongestSide does (`square`: to img_size x img_size, as SAM 2.1's
    input); masks follow by area averaging."""
    if not path.exists():
        raise TrainDataError(f"{section}.data: image {path} is missing; pass {section}.image_root=FOLDER holding it")
    image = load_rgb(path, max_pixels=1 << 62)
    if square:
        resized = cv2.resize(image, (img_size, img_size), interpolation=cv2.INTER_LINEAR)
    else:
        resized = ResizeLongestSide(img_size).apply_image(image)  # [h, w, 3]
    h, w = resized.shape[:2]
    frame, areas = [], []
    for counts, mh, mw in masks:
        small = cv2.resize(rle.decode(counts, mh, mw).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
        if small.sum() >= MIN_FRAME_AREA:
            padded = np.zeros((img_size, img_size), dtype=bool)
            padded[:h, :w] = small
            frame.append(rle.encode(padded[None])[0])
            areas.append(int(small.sum()))
    return {
        "image": torch.from_numpy(resized).permute(2, 0, 1).contiguous(),
        "masks": frame,
        "areas": np.asarray(areas, dtype=np.float64),
        "small_masks": len(masks) - len(frame),
    }


def batch(
    examples: list[dict],
    rng: np.random.Generator,
    images: int,
    masks_per_image: int,
    img_size: int,
    area_power: float = 0.0,
    context: bool = False,
):
    """Sample `images` examples and up to `masks_per_image` masks each, with probability proportional
    to area ** area_power (0: uniform; negative: small masks more often).

    Returns ([B] uint8 image tensors, [B] bool mask tensors [K_b, S, S]), and with `context` also
    [B] bool tensors [N_b, S, S] of every mask of each image.
    """
    chosen = rng.choice(len(examples), size=images, replace=len(examples) < images)
    pictures, targets, everything = [], [], []
    for i in chosen:
        ex = examples[int(i)]
        weights = ex["areas"] ** area_power
        picks = rng.choice(
            len(ex["masks"]), size=min(masks_per_image, len(ex["masks"])), replace=False, p=weights / weights.sum()
        )
        # Decode the drawn masks, or every mask of the image when the context is wanted too
        wanted = range(len(ex["masks"])) if context else picks
        decoded = np.stack([rle.decode(ex["masks"][int(k)], img_size, img_size) for k in wanted])
        pictures.append(ex["image"])
        targets.append(torch.from_numpy(decoded[picks] if context else decoded))
        if context:
            everything.append(torch.from_numpy(decoded))
    return (pictures, targets, everything) if context else (pictures, targets)
