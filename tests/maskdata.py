"""Small synthetic mask sets for the audit and export tests: rectangles written as datasets or COCO files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_engine.audit.load import mask_record
from data_engine.io import coco, rle
from data_engine.io.dataset import image_row, mask_id, write_shard
from data_engine.io.inputs import image_id


def rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """[h, w] bool mask, True on rows y0..y1-1 and columns x0..x1-1."""
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def mask_rows(file_name: str, masks: list[np.ndarray], stage: str = "auto", scores=None) -> list[dict]:
    """Project mask rows (MASK_SCHEMA) for one image's masks."""
    h, w = masks[0].shape if masks else (0, 0)
    counts = rle.encode(np.stack(masks)) if masks else []
    boxes = rle.bbox(counts, h, w)
    return [
        {
            "image_id": image_id(file_name),
            "file_name": file_name,
            "height": h,
            "width": w,
            "segmentation": c,
            "area": int(m.sum()),
            "bbox": boxes[i].tolist(),
            "predicted_iou": 0.9 if scores is None else scores[i],
            "stability_score": 0.97,
            "point_coords": [[1.0, 2.0]],
            "crop_box": [0.0, 0.0, float(w), float(h)],
            "stage": stage,
            "source": stage,
            "model": "test",
            "extra": None,
        }
        for i, (c, m) in enumerate(zip(counts, masks))
    ]


def write_dataset(out_dir: Path, images: dict, size=(64, 80), stage: str = "auto") -> Path:
    """images: {file_name: [masks]} -> a dataset folder with one shard."""
    masks, rows = [], []
    for name, ms in images.items():
        masks += mask_rows(name, ms, stage)
        image = {"image_id": image_id(name), "file_name": name, "height": size[0], "width": size[1]}
        rows.append(image_row(image, num_masks=len(ms), seconds=0.0))
    write_shard(out_dir, "shard-000000000", masks, rows)
    return out_dir


def write_coco(path: Path, images: dict, size=(64, 80)) -> Path:
    """images: {file_name: [masks]} -> a COCO instances file with RLE segmentations."""
    imgs, anns = [], []
    for i, (name, ms) in enumerate(images.items(), start=1):
        imgs.append(coco.image_entry({"file_name": name, "height": size[0], "width": size[1]}, i))
        for c in rle.encode(np.stack(ms)) if ms else []:
            anns.append(coco.annotation(len(anns) + 1, i, c, *size))
    coco.write(path, imgs, anns)
    return path


def side(images: dict, size=(64, 80), stages=None, scores=None) -> dict:
    """An audit side as `data_engine.audit.load.load_side` returns it, straight from masks.

    images: {file_name: [masks]}; stages/scores: {file_name: [value per mask]} (default 'auto' / 0.9).
    """
    out = {"images": {}, "masks": {}, "failed": [], "kind": "memory", "path": "memory"}
    for name, ms in images.items():
        out["images"][name] = {"file_name": name, "image_id": image_id(name), "height": size[0], "width": size[1]}
        counts = rle.encode(np.stack(ms)) if ms else []
        score = (scores or {}).get(name, [0.9] * len(ms))
        stage = (stages or {}).get(name, ["auto"] * len(ms))
        out["masks"][name] = [
            mask_record(mask_id(image_id(name), stage[i], i), c, int(m.sum()), score[i], stage[i], "auto")
            for i, (c, m) in enumerate(zip(counts, ms))
        ]
    return out
