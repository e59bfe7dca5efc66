"""The synth stage: seeded synthetic scenes written as pictures plus expert masks (COCO and Parquet)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from data_engine.errors import require
from data_engine.io import coco, inputs, rle
from data_engine.io.atomic import atomic_path
from data_engine.io.dataset import Dataset, image_row, mask_row, shard_name
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.schema import setting
from data_engine.synth import scenes as synth

PICTURES = "pictures"


@dataclass(frozen=True)
class Synth:
    num_scenes: int = setting(100, ge=1)  # scenes scene-00000 ... written to output.dir/pictures
    seed: int = setting(0, ge=0)  # scene i of a seed is the same picture on every machine
    min_size: int = setting(256, ge=32)  # each side is drawn uniformly from [min_size, max_size] pixels
    max_size: int = setting(512, ge=32)
    max_objects: int = setting(12, ge=3)  # top-level objects per scene: 3 to this many
    shard_size: int = setting(64, ge=1)  # scenes per Parquet shard (the unit of resume)

    def check(self) -> None:
        require(
            self.min_size <= self.max_size,
            "synth.min_size",
            f"need 32 <= min_size <= max_size, got {self.min_size} and {self.max_size}",
        )


def run(cfg: dict, settings: Synth) -> dict:
    """Write `synth.num_scenes` scenes; an interrupted run resumes shard by shard."""
    out_dir = Path(cfg["output"]["dir"])
    size, total = settings.shard_size, settings.num_scenes
    shards = [
        {"shard_id": shard_name(i // size), "files": list(range(i, min(i + size, total)))}
        for i in range(0, total, size)
    ]

    def coco(summary: dict) -> dict:
        write_coco(out_dir)
        return {"instances": str(out_dir / "instances.json"), "pictures": str(out_dir / PICTURES)}

    job = ShardedJob(
        out_dir=out_dir,
        config=cfg,
        shards=shards,
        make_worker=partial(SceneWriter, out_dir, settings),
        runtime=cfg["runtime"],
        record={"input_root": str(out_dir / PICTURES)},
        extra_summary=coco,
    )
    return run_job(job)


class SceneWriter:
    """Writes a shard of scenes: their pictures, then the shard's tables and done marker."""

    def __init__(self, out_dir: Path, settings: Synth):
        self.out_dir, self.settings = out_dir, settings

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        return write_scenes(self.out_dir, shard, self.settings)


def scene_name(index: int) -> str:
    return f"scene-{index:05d}.png"


def write_scenes(out_dir: Path, shard: dict, settings: Synth) -> dict:
    """One shard: its pictures, then its masks/ and images/ tables and its done marker."""
    start, results, seed = time.time(), [], settings.seed
    for index in shard["files"]:
        scene = synth.make_scene(seed, index, settings.min_size, settings.max_size, settings.max_objects)
        name = scene_name(index)
        write_png(out_dir / PICTURES / name, scene["image"])
        rows = scene_rows(scene, name, seed, index)
        image = {
            "image_id": inputs.image_id(name),
            "file_name": name,
            "height": scene["height"],
            "width": scene["width"],
        }
        results.append((image_row(image, num_masks=len(rows)), rows))
    return runs.complete_shard(out_dir, shard["shard_id"], results, start)


def write_png(path: Path, image) -> None:
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def annotation_id(index: int, k: int) -> int:
    """Stable annotation id: scene index and object number."""
    return index * 1000 + k + 1


def scene_rows(scene: dict, name: str, seed: int, index: int) -> list[dict]:
    """One expert mask row per annotated object; `extra` links parts to their whole."""
    h, w = scene["height"], scene["width"]
    objects = scene["objects"]
    counts = rle.encode(synth_masks(scene))
    boxes = rle.bbox(counts, h, w).tolist()
    areas = rle.area(counts, h, w).tolist()
    image = {"image_id": inputs.image_id(name), "file_name": name, "height": h, "width": w}
    rows = []
    for k, obj in enumerate(objects):
        parent = None if obj["parent"] is None else annotation_id(index, obj["parent"])
        extra = {
            "id": annotation_id(index, k),
            "shape": obj["shape"],
            "level": obj["level"],
            "part_of": parent,
            "scene": [seed, index],
        }
        rows.append(
            mask_row(image, counts[k], stage="synth", source="expert", extra=extra, area=areas[k], bbox=boxes[k])
        )
    return rows


def synth_masks(scene: dict) -> np.ndarray:
    """[N, H, W] bool masks of the scene's objects."""
    h, w = scene["height"], scene["width"]
    return np.stack([o["mask"] for o in scene["objects"]]) if scene["objects"] else np.zeros((0, h, w), bool)


def write_coco(out_dir: Path) -> None:
    """instances.json from the Parquet tables (so a resumed run writes the same file)."""
    dataset = Dataset.open(out_dir)
    images = sorted(
        dataset.images(columns=["image_id", "file_name", "height", "width"]).to_pylist(), key=lambda r: r["file_name"]
    )
    masks = dataset.masks(
        columns=["image_id", "file_name", "height", "width", "segmentation", "area", "bbox", "extra"]
    ).to_pylist()
    annotations = []
    for m in sorted(masks, key=lambda r: json.loads(r["extra"])["id"]):
        extra = json.loads(m["extra"])
        scene_fields = {k: extra[k] for k in ("shape", "level", "part_of")}
        annotations.append(coco.row_annotation(m, extra["id"], m["image_id"], **scene_fields))
    coco_images = [coco.image_entry(r, r["image_id"]) for r in images]
    coco.write(out_dir / "instances.json", coco_images, annotations)
