"""What a release holds: the ok images of one or more datasets, in image-id order, cut into tar shards.

A dataset is any stage's output folder (masks/ and images/ Parquet tables). The images are found under
`image_root`, or where each dataset's own images are (io.dataset.Dataset.image_root).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from data_engine.errors import UserError
from data_engine.io.dataset import Dataset


class ReleaseError(UserError, ValueError):
    """The datasets cannot be released as asked; the message says what to do."""


def tar_name(index: int) -> str:
    return f"sa_{index:06d}"


def plan(datasets: list[str], image_root: str | None, stages: list[str], images_per_tar: int) -> list[dict]:
    """Tar shards [{"shard_id": "sa_000000", "files": [image entry, ...]}, ...] of every ok image.

    An image entry: {image_id, file_name, height, width, path (absolute), datasets (folders holding it)}."""
    images: dict[int, dict] = {}
    for folder in [Path(d).expanduser().resolve() for d in datasets]:
        dataset = open_dataset(folder, image_root)
        for row in dataset.images(pc.field("status") == "ok").to_pylist():
            add_image(images, row, dataset.image_root, folder)
    check_mask_ids(datasets, stages)
    ordered = [images[k] for k in sorted(images)]
    return [
        {"shard_id": tar_name(i // images_per_tar), "files": ordered[i : i + images_per_tar]}
        for i in range(0, len(ordered), images_per_tar)
    ]


def open_dataset(folder: Path, image_root: str | None) -> Dataset:
    """The dataset with its images under release.image_root, or where its run read them from."""
    dataset = Dataset.open(folder, "release.data", image_root=image_root, needs=("masks", "images"))
    if dataset.image_root is None:
        raise ReleaseError(
            f"release.data: cannot tell where the images of {folder} are; pass release.image_root=FOLDER"
        )
    dataset.image_root = dataset.image_root.resolve()
    return dataset


def add_image(images: dict[int, dict], row: dict, root: Path, folder: Path) -> None:
    """Merge one dataset's image row; the same id must name the same file of the same size everywhere."""
    path = Path(row["file_name"])
    entry = {
        "image_id": row["image_id"],
        "file_name": row["file_name"],
        "height": row["height"],
        "width": row["width"],
        "path": str(path if path.is_absolute() else root / path),
        "datasets": [str(folder)],
    }
    seen = images.get(row["image_id"])
    if seen is None:
        images[row["image_id"]] = entry
    elif (seen["path"], seen["height"], seen["width"]) != (entry["path"], entry["height"], entry["width"]):
        raise ReleaseError(
            f"image id {row['image_id']} is {seen['path']} ({seen['width']}x{seen['height']}) in {seen['datasets'][0]} "
            f"but {entry['path']} ({entry['width']}x{entry['height']}) in {folder}; release these datasets separately"
        )
    elif str(folder) not in seen["datasets"]:
        seen["datasets"].append(str(folder))


def check_mask_ids(datasets: list[str], stages: list[str]) -> None:
    """Released mask ids must be unique: a dataset given twice, or two copies of one, would repeat them."""
    ids = Counter()
    for folder in datasets:
        released = pc.field("stage").isin(pa.array(stages, pa.string()))
        ids.update(Dataset.open(folder, "release.data").masks(released, ["mask_id"])["mask_id"].to_pylist())
    repeated = [k for k, n in ids.items() if n > 1]
    if repeated:
        raise ReleaseError(
            f"release.data: {len(repeated)} mask ids occur more than once (first: {repeated[0]}); "
            "give each dataset once and do not release a copy of a dataset beside it"
        )


def digest(shards: list[dict]) -> str:
    """Checksum of the plan, recorded in run.json: a resumed release must plan the same tars."""
    return hashlib.sha256(json.dumps(shards, sort_keys=True).encode()).hexdigest()
