"""Training examples for SAM: images and their masks from Parquet datasets or COCO files, brought
to the model's input frame (long side resized to the encoder size, padded at the bottom-right)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from . import coco, rle
from .dataset import read_masks
from .images import load_rgb

MIN_FRAME_AREA = 20  # masks smaller than this many pixels in the model frame are skipped


class TrainDataError(ValueError):
    """A training source cannot be used; the message says what to do."""

    user_error = True


def load_sources(paths: list[str], image_root: str | None, img_size: int, max_images: int | None = None) -> list[dict]:
    """Examples from every source: {'image': [3, h, w] uint8 tensor, 'masks': RLE counts in the
    img_size x img_size frame, 'file_name'}. Images without a usable mask are left out."""
    examples = []
    for path in paths:
        for root, file_name, masks in list_source(Path(path).expanduser(), image_root):
            if max_images is not None and len(examples) >= max_images:
                return examples
            example = to_frame(root / file_name, masks, img_size)
            if example["masks"]:
                examples.append({**example, "file_name": file_name})
    if not examples:
        raise TrainDataError(f"train.data={paths}: no image with a mask of at least {MIN_FRAME_AREA} px was found")
    return examples


def list_source(path: Path, image_root: str | None):
    """Yield (image root, file name, [(counts, height, width)]) per image of one source."""
    if path.is_dir() and (path / "masks").is_dir():
        yield from parquet_source(path, image_root)
    elif path.is_file() and path.suffix == ".json":
        yield from coco_source(path, image_root)
    else:
        raise TrainDataError(f"train.data: {path} is neither a data-engine output folder (with masks/) "
                             "nor a COCO instances .json file")


def parquet_source(path: Path, image_root: str | None):
    """Masks of any stage's output; images from image_root, the run's input folder, or pictures/."""
    root = Path(image_root).expanduser() if image_root else parquet_image_root(path)
    table = read_masks(path, ["file_name", "height", "width", "segmentation"]).to_pylist()
    by_file: dict[str, list] = {}
    for row in table:
        by_file.setdefault(row["file_name"], []).append((row["segmentation"], row["height"], row["width"]))
    for name in sorted(by_file):
        yield root, name, by_file[name]


def parquet_image_root(path: Path) -> Path:
    record = path / "run.json"
    if record.exists():
        root = json.loads(record.read_text()).get("input_root")
        if root and Path(root).is_dir():
            return Path(root)
    if (path / "pictures").is_dir():
        return path / "pictures"
    raise TrainDataError(f"train.data: cannot tell where the images of {path} are; pass train.image_root=FOLDER")


def coco_source(path: Path, image_root: str | None):
    """COCO instances: images next to the file (or in pictures/ beside it, or image_root)."""
    doc = coco.load(path)
    root = Path(image_root).expanduser() if image_root else (
        path.parent / "pictures" if (path.parent / "pictures").is_dir() else path.parent)
    by_image: dict[int, list] = {}
    for ann in doc.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in sorted(doc.get("images", []), key=lambda im: im["file_name"]):
        h, w = image["height"], image["width"]
        masks = [(coco.segmentation_to_counts(a["segmentation"], h, w), h, w) for a in by_image.get(image["id"], [])]
        yield root, image["file_name"], masks


def to_frame(path: Path, masks: list[tuple], img_size: int) -> dict:
    """Resize the image as SAM's ResizeLongestSide does; masks follow by area averaging."""
    if not path.exists():
        raise TrainDataError(f"train.data: image {path} is missing; pass train.image_root=FOLDER holding it")
    image = load_rgb(path, max_pixels=1 << 62)
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
    return {"image": torch.from_numpy(resized).permute(2, 0, 1).contiguous(), "masks": frame,
            "areas": np.asarray(areas, dtype=np.float64)}


def batch(examples: list[dict], rng: np.random.Generator, images: int, masks_per_image: int, img_size: int,
          area_power: float = 0.0):
    """Sample `images` examples and up to `masks_per_image` masks each, with probability proportional
    to area ** area_power (0: uniform).

    Returns ([B] uint8 image tensors, [B] bool mask tensors [K_b, S, S]).
    """
    chosen = rng.choice(len(examples), size=images, replace=len(examples) < images)
    pictures, targets = [], []
    for i in chosen:
        ex = examples[int(i)]
        weights = ex["areas"] ** area_power
        picks = rng.choice(len(ex["masks"]), size=min(masks_per_image, len(ex["masks"])), replace=False,
                           p=weights / weights.sum())
        decoded = np.stack([rle.decode(ex["masks"][int(k)], img_size, img_size) for k in picks])
        pictures.append(ex["image"])
        targets.append(torch.from_numpy(decoded))
    return pictures, targets
