"""Stage 2 test data: small synthetic scenes, a detector checkpoint file, and a stand-in for `detect`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from data_engine.config import compose
from data_engine.detector.model import build_detector, save_detector
from data_engine.io.images import load_rgb
from data_engine.stages import run_stage

# Filters opened so the embedded tiny model keeps a mask for most boxes (what is tested is the plumbing)
OPEN = ["amg=tiny", "amg.pred_iou_thresh=0", "amg.stability_score_thresh=0", "amg.min_mask_region_area=0"]


def make_scenes(folder: Path, num: int = 3, seed: int = 0) -> Path:
    """A synth stage output: pictures/ and instances.json of `num` scenes of 96-128 px."""
    cfg = compose(
        [
            "stage=synth",
            f"synth.num_scenes={num}",
            f"synth.seed={seed}",
            "synth.min_size=96",
            "synth.max_size=128",
            "synth.max_objects=5",
            "runtime=serial",
            "runtime.progress=false",
            f"output.dir={folder}",
        ]
    )
    run_stage(cfg)
    return folder


def make_detector_file(path: Path) -> Path:
    """A real (seeded, untrained) small detector checkpoint, so the stage loads and checksums a real file."""
    torch.manual_seed(0)
    settings = {"min_size": 96, "max_size": 128}
    save_detector(build_detector("small", **settings), "small", settings, path)
    return path


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class OracleDetector:
    """`detect(model, image, score_thresh)` with the detector's contract, answering each scene's exact
    boxes (from instances.json; XYXY, scores from 0.99 down by 0.05 in the file's order)."""

    def __init__(self, scenes: Path, boxes_per_image: int | None = None):
        doc = json.loads((scenes / "instances.json").read_text())
        names = {img["id"]: img["file_name"] for img in doc["images"]}
        per_name: dict[str, list] = {}
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            per_name.setdefault(names[ann["image_id"]], []).append([x, y, x + w, y + h])
        self.answers = {}
        for name, boxes in per_name.items():
            image = load_rgb(scenes / "pictures" / name, 10**8)
            boxes = np.asarray(boxes[:boxes_per_image], dtype=np.float32)
            scores = np.float32(0.99) - np.float32(0.05) * np.arange(len(boxes), dtype=np.float32)
            self.answers[image_key(image)] = (boxes, scores)
        self.calls = 0

    def __call__(self, model, image, score_thresh=0.05):
        self.calls += 1
        boxes, scores = self.answers.get(image_key(image), (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
        keep = scores >= score_thresh
        return boxes[keep], scores[keep]


def semi_cfg(scenes_pictures: Path, detector: Path, out: Path, *overrides) -> dict:
    return compose(
        [
            "stage=semi",
            f"input.path={scenes_pictures}",
            f"detector.checkpoint={detector}",
            f"output.dir={out}",
            "runtime=serial",
            "runtime.progress=false",
            "output.overlays=0",
            "model.device=cpu",
            *OPEN,
            *overrides,
        ]
    )
