"""Write one tar shard of a release, byte-identical on every run.

Per image, in image-id order: `sa_<image_id>.jpg` (downsampled, blurred) then `sa_<image_id>.json`
(SA-1B's per-image document, masks at the released size). Tar members carry mtime 0, uid/gid 0 and
no user names; JPEG quality is fixed by the config. Each blurred box goes to the shard's sidecar
`blur/sa_NNNNNN.json`.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_engine.exports.formats import sa1b_annotation
from data_engine.io.atomic import atomic_path, write_json_atomic
from data_engine.io.dataset import Dataset, mask_row
from data_engine.io.images import load_rgb
from data_engine.release.blur import PrivacyBlur
from data_engine.release.downsample import released_size, resize_image, resize_mask, scale_box, scale_points

log = logging.getLogger(__name__)

MASK_COLUMNS = [
    "mask_id",
    "image_id",
    "height",
    "width",
    "segmentation",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
    "stage",
    "source",
    "model",
]


class MaskSource:
    """The chosen stages' masks of each dataset, read once per worker and looked up a shard at a time."""

    def __init__(self, stages: list[str]):
        self.stages, self.tables = pa.array(stages, pa.string()), {}

    def for_images(self, images: list[dict]) -> dict[int, list[dict]]:
        """{image_id: mask rows}, each image's rows in dataset order, then table order."""
        found: dict[int, list[dict]] = {}
        for folder in dict.fromkeys(d for img in images for d in img["datasets"]):
            tbl = self.table(folder)
            ids = pa.array([img["image_id"] for img in images], pa.int64())
            for row in tbl.filter(pc.is_in(tbl["image_id"], value_set=ids)).to_pylist():
                found.setdefault(row["image_id"], []).append(row)
        return found

    def table(self, folder: str) -> pa.Table:
        if folder not in self.tables:
            kept = pc.field("stage").isin(self.stages)
            self.tables[folder] = Dataset.open(folder, "release.data").masks(kept, MASK_COLUMNS)
        return self.tables[folder]


def member_name(image_id: int, suffix: str) -> str:
    return f"sa_{image_id}{suffix}"


def write_tar(
    shard: dict, out_dir: Path, masks: MaskSource, blur: PrivacyBlur, settings: dict, on_image=lambda *e: None
) -> dict:
    """Release a shard's images into out_dir/<shard_id>.tar and its blur sidecar; returns the shard's counts."""
    name, start = shard["shard_id"], time.time()
    rows = masks.for_images(shard["files"])
    stats = new_stats(name)
    sidecar = []
    with atomic_path(out_dir / f"{name}.tar") as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, entry in enumerate(shard["files"]):
            try:
                jpeg, doc, boxes, dropped = release_image(entry, rows.get(entry["image_id"], []), blur, settings)
            except Exception as err:  # per-image boundary: the image is left out and recorded, the shard goes on
                log.warning("%s failed: %s", entry["file_name"], err)
                stats["failed"].append(
                    {"image_id": entry["image_id"], "file_name": entry["file_name"], "error": str(err)}
                )
                on_image(name, i, 0, True)
                continue
            add_member(tar, member_name(entry["image_id"], ".jpg"), jpeg)
            add_member(tar, member_name(entry["image_id"], ".json"), json.dumps(doc).encode())
            sidecar += [{"image_id": entry["image_id"], **b} for b in boxes]
            count(stats, entry, doc, boxes, dropped)
            on_image(name, i, len(doc["annotations"]), False)
    write_json_atomic({"tar": f"{name}.tar", "boxes": sidecar}, out_dir / "blur" / f"{name}.json")
    return {**stats, "seconds": round(time.time() - start, 3)}


def new_stats(name: str) -> dict:
    return {
        "tar": f"{name}.tar",
        "images": 0,
        "masks": 0,
        "masks_dropped_empty": 0,
        "images_downsampled": 0,
        "images_without_masks": 0,
        "images_blurred": 0,
        "boxes": {},
        "failed": [],
    }


def count(stats: dict, entry: dict, doc: dict, boxes: list[dict], dropped: int) -> None:
    stats["images"] += 1
    stats["masks"] += len(doc["annotations"])
    stats["masks_dropped_empty"] += dropped
    stats["images_downsampled"] += int(doc["image"]["height"] != entry["height"])
    stats["images_without_masks"] += int(not doc["annotations"])
    stats["images_blurred"] += int(bool(boxes))
    for box in boxes:
        stats["boxes"][box["kind"]] = stats["boxes"].get(box["kind"], 0) + 1


def release_image(entry: dict, rows: list[dict], blur: PrivacyBlur, settings: dict):
    """One image -> (JPEG bytes, SA-1B document, blurred boxes, masks dropped as empty at the released size)."""
    # Load and check the file is the one the dataset was made from
    image = load_rgb(entry["path"], settings["max_pixels"])
    if image.shape[:2] != (entry["height"], entry["width"]):
        raise ValueError(
            f"{entry['path']} is {image.shape[1]}x{image.shape[0]}, the dataset recorded "
            f"{entry['width']}x{entry['height']}: the file changed since its masks were made"
        )
    # Downsample, then blur at the released size
    size = released_size(entry["height"], entry["width"], settings["shortest_side"])
    released, boxes = blur(resize_image(image, size))
    # Masks at the released size; a mask with no pixel left is dropped (and counted)
    annotations = [released_annotation(row, entry, size) for row in rows]
    kept = [a for a in annotations if a["area"] > 0]
    doc = {
        "image": {
            "image_id": entry["image_id"],
            "width": size[1],
            "height": size[0],
            "file_name": member_name(entry["image_id"], ".jpg"),
        },
        "annotations": kept,
    }
    return encode_jpeg(released, settings["jpeg_quality"]), doc, boxes, len(annotations) - len(kept)


def released_annotation(row: dict, entry: dict, size: tuple[int, int]) -> dict:
    """A mask row -> SA-1B annotation at `size`: RLE resized; area and bbox from it; prompt and crop box scaled."""
    h, w = entry["height"], entry["width"]
    sx, sy = size[1] / w, size[0] / h
    counts = resize_mask(row["segmentation"], h, w, size)
    image = {**entry, "height": size[0], "width": size[1]}
    released = mask_row(
        image,
        counts,
        stage=row["stage"],
        source=row["source"],
        model=row["model"],
        mask_id=row["mask_id"],
        predicted_iou=row["predicted_iou"],
        stability_score=row["stability_score"],
        point_coords=scale_points(row["point_coords"], sx, sy),
        crop_box=scale_box(row["crop_box"], sx, sy),
    )
    return sa1b_annotation(released)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """[H, W, 3] RGB uint8 -> baseline JPEG bytes (same bytes for the same pixels and OpenCV build)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A regular file with fixed metadata, so the tar's bytes depend only on the names and contents."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
