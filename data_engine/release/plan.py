"""What a release holds: the ok images of one or more datasets, in image-id order, cut into tar shards.

A dataset is any stage's output folder (masks/ and images/ Parquet tables). The images are found under
`image_root`, or under each dataset's own run record (`input_root`, or its stage's `image_root`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from data_engine.errors import UserError
from data_engine.io.dataset import read_images, read_masks, read_run_record


class ReleaseError(UserError, ValueError):
    """The datasets cannot be released as asked; the message says what to do."""


def tar_name(index: int) -> str:
    return f"sa_{index:06d}"


def plan(datasets: list[str], image_root: str | None, stages: list[str], images_per_tar: int) -> list[dict]:
    """Tar shards [{"shard_id": "sa_000000", "files": [image entry, ...]}, ...] of every ok image.

    An image entry: {image_id, file_name, height, width, path (absolute), datasets (folders holding it)}."""
    images: dict[int, dict] = {}
    for folder in [Path(d).expanduser().resolve() for d in datasets]:
        root = find_image_root(folder, image_root)
        for row in read_images(folder).to_pylist():
            if row["status"] == "ok":
                add_image(images, row, root, folder)
    check_mask_ids(datasets, stages)
    ordered = [images[k] for k in sorted(images)]
    return [
        {"shard_id": tar_name(i // images_per_tar), "files": ordered[i : i + images_per_tar]}
        for i in range(0, len(ordered), images_per_tar)
    ]


def find_image_root(folder: Path, image_root: str | None) -> Path:
    """release.image_root, else the folder the dataset's run read its images from."""
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        raise ReleaseError(
            f"release.data: {folder} has no masks/ and images/ tables; give the output.dir of a data-engine stage"
        )
    if image_root:
        return Path(image_root).expanduser().resolve()
    record = read_run_record(folder, "release.data", missing_ok=True)
    root = record.get("input_root") or stage_image_root(record.get("config", {}))
    if not root or not Path(root).is_dir():
        raise ReleaseError(
            f"release.data: cannot tell where the images of {folder} are; pass release.image_root=FOLDER"
        )
    return Path(root).resolve()


def stage_image_root(config: dict) -> str | None:
    """The image_root setting of the stage a run record's config ran (assisted, semi_merge), if any."""
    stage = config.get("stage")
    section = config.get(stage.get("name")) if isinstance(stage, dict) else None
    return section.get("image_root") if isinstance(section, dict) else None


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
        tbl = read_masks(Path(folder).expanduser(), columns=["mask_id", "stage"])
        ids.update(tbl.filter(pc.is_in(tbl["stage"], value_set=pa.array(stages, pa.string())))["mask_id"].to_pylist())
    repeated = [k for k, n in ids.items() if n > 1]
    if repeated:
        raise ReleaseError(
            f"release.data: {len(repeated)} mask ids occur more than once (first: {repeated[0]}); "
            "give each dataset once and do not release a copy of a dataset beside it"
        )


def digest(shards: list[dict]) -> str:
    """Checksum of the plan, recorded in run.json: a resumed release must plan the same tars."""
    return hashlib.sha256(json.dumps(shards, sort_keys=True).encode()).hexdigest()
