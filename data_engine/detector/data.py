"""Detector training data: every mask's box, one class, from the SAM train stage's readers.

Images and masks come from `train.data.load_sources` (any stage's Parquet output and COCO files, with
its accounting of what is left out), brought to a frame whose long side is `size` pixels; a mask's
box is its bounding box in that frame, as XYXY.
"""

from __future__ import annotations

import numpy as np
import torch

from data_engine.io import rle
from data_engine.io.inputs import image_id
from data_engine.train.data import TrainDataError, load_sources

HASH_BUCKETS = 10_000  # held-out membership: image_id(file_name) % HASH_BUCKETS < val_fraction * HASH_BUCKETS


def load_examples(
    paths: list[str], image_root: str | None, size: int, max_images: int | None = None
) -> tuple[list[dict], list[dict]]:
    """Examples {'image': [3, h, w] uint8, 'boxes': [K, 4] float32 XYXY, 'areas': [K] mask areas,
    'file_name', 'small_masks'} and the images or annotations left out, each with its reason."""
    examples, skipped = load_sources(paths, image_root, size, max_images, section="detector")
    for ex in examples:
        xywh = rle.bbox(ex["masks"], size, size)  # [K, 4], w = x_max - x_min + 1
        ex["boxes"] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    return examples, skipped


def split(examples: list[dict], val_fraction: float) -> tuple[list[dict], list[dict]]:
    """(training, held-out) examples, decided by each image's id alone so that adding images moves no
    other image across; at least one image is held out when val_fraction > 0 and there are two."""
    cut = val_fraction * HASH_BUCKETS
    held = [image_id(ex["file_name"]) % HASH_BUCKETS < cut for ex in examples]
    if val_fraction > 0 and not any(held) and len(examples) > 1:
        held[min(range(len(examples)), key=lambda i: image_id(examples[i]["file_name"]) % HASH_BUCKETS)] = True
    train = [ex for ex, h in zip(examples, held) if not h]
    val = [ex for ex, h in zip(examples, held) if h]
    if not train:
        raise TrainDataError(
            f"detector.val_fraction={val_fraction} holds out all {len(examples)} images; lower it or add images"
        )
    return train, val


def batch(
    examples: list[dict], rng: np.random.Generator, images: int, hflip: bool, device
) -> tuple[list[torch.Tensor], list[dict]]:
    """`images` examples drawn with `rng`, each flipped left-right with chance 1/2 when hflip.

    Returns ([B] float [3, h, w] images in [0, 1], [B] targets {'boxes': [K, 4] XYXY, 'labels': [K] ones}).
    """
    chosen = rng.choice(len(examples), size=images, replace=len(examples) < images)
    pictures, targets = [], []
    for i in chosen:
        ex = examples[int(i)]
        image, boxes = ex["image"], torch.from_numpy(ex["boxes"]).clone()  # [3, h, w], [K, 4]
        # Mirror the picture and its boxes: x -> w - x
        if hflip and rng.random() < 0.5:
            image, width = image.flip(-1), image.shape[-1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        pictures.append(image.to(device).float() / 255)
        labels = torch.ones(len(boxes), dtype=torch.int64, device=device)
        targets.append({"boxes": boxes.to(device), "labels": labels})
    return pictures, targets
