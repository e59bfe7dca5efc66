"""Stage 2's figures on held-out synthetic scenes (docs/stages/semi.md).

With a detector trained by stage=detector and the embedded SAM, on scenes of a seed the detector never
saw: detector box AP and AR@100 (COCOeval, class-agnostic); prefill precision (prefilled masks that
match an expert mask at IoU >= 0.75, one to one) and coverage (expert objects of >= 400 px matched so);
the simulated annotator's work saved (expert objects it did not have to draw); masks per image before
and after the merge; seconds per image of the prefill. Not a test: it prints what it measures.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/semi_figures.py --detector DET/model.pt --work /tmp/semi_figures
    # tuning on other scenes: every combination of the listed values, prefill figures only
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/semi_figures.py --detector DET/model.pt --seed 2000 \
        --sweep semi.box_score_thresh=0.5,0.7 amg.pred_iou_thresh=0.6,0.8
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np

from data_engine.config import compose, validate
from data_engine.detector.data import load_examples
from data_engine.detector.evaluate import box_metrics
from data_engine.detector.model import load_detector, read_file
from data_engine.io import rle
from data_engine.io.dataset import read_images, read_masks
from data_engine.io.images import load_rgb
from data_engine.semi import prefill as prefill_module
from data_engine.semi.annotator import annotate, load, review
from data_engine.stages import run_stage

BASE = ["runtime=serial", "runtime.progress=false", "output.overlays=0", "model.device=cpu", "output.overwrite=true"]


def main() -> None:
    args = parse_args()
    work = Path(args.work)
    scenes = make_scenes(work / f"scenes-seed{args.seed}", args)
    print(json.dumps({"detector": detector_figures(args.detector, scenes)}))
    if args.oracle_boxes:
        prefill_module.detect = ExactBoxes(scenes)
        work = work / "exact-boxes"  # runs of their own: the output folder is keyed by the overrides
    if args.sweep:
        keys = [s.split("=", 1)[0] for s in args.sweep]
        values = [s.split("=", 1)[1].split(",") for s in args.sweep]
        for combo in itertools.product(*values):
            overrides = [*args.overrides, *(f"{k}={v}" for k, v in zip(keys, combo))]
            semi = prefill(scenes, args.detector, work, overrides)
            print(json.dumps({"overrides": overrides, **prefill_figures(semi, scenes, args)}))
        return
    semi = prefill(scenes, args.detector, work, args.overrides)
    figures = {"overrides": args.overrides, **prefill_figures(semi, scenes, args), **merge_figures(semi, scenes, work)}
    print(json.dumps(figures, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", required=True, help="model.pt written by stage=detector")
    parser.add_argument("--work", default="/tmp/semi_figures", help="folder for the scenes and runs")
    parser.add_argument("--seed", type=int, default=1000, help="synthetic scenes' seed (the detector's was 0)")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--min-size", type=int, default=256)
    parser.add_argument("--max-size", type=int, default=512)
    parser.add_argument("--max-objects", type=int, default=12)
    parser.add_argument("--keep-iou", type=float, default=0.75, help="a prefilled mask matches at this IoU")
    parser.add_argument("--min-area", type=int, default=400, help="expert objects counted for coverage")
    parser.add_argument(
        "--oracle-boxes", action="store_true", help="prompt the scenes' exact boxes instead of detecting (a ceiling)"
    )
    parser.add_argument("--sweep", nargs="*", default=[], help="KEY=V1,V2 ...: prefill figures per combination")
    parser.add_argument("overrides", nargs="*", default=["amg=tiny"], help="stage=semi overrides")
    return parser.parse_args()


def make_scenes(out: Path, args) -> Path:
    cfg = compose(
        [
            "stage=synth",
            f"synth.num_scenes={args.scenes}",
            f"synth.seed={args.seed}",
            f"synth.min_size={args.min_size}",
            f"synth.max_size={args.max_size}",
            f"synth.max_objects={args.max_objects}",
            f"output.dir={out}",
            *BASE,
        ]
    )
    run_stage(cfg)
    return out


class ExactBoxes:
    """Stands in for detector.model.detect: each scene's exact object boxes, score 1 (what SAM and the
    filters make of perfect boxes)."""

    def __init__(self, scenes: Path):
        doc = json.loads((scenes / "instances.json").read_text())
        names = {img["id"]: img["file_name"] for img in doc["images"]}
        boxes: dict[str, list] = {name: [] for name in names.values()}
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            boxes[names[ann["image_id"]]].append([x, y, x + w, y + h])
        self.by_image = {}
        for name, found in boxes.items():
            key = load_rgb(scenes / "pictures" / name, 10**9).tobytes()
            self.by_image[hashlib.sha1(key).hexdigest()] = np.asarray(found, dtype=np.float32).reshape(-1, 4)

    def __call__(self, model, image, score_thresh=0.0):
        found = self.by_image[hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()]
        return found, np.ones(len(found), dtype=np.float32)


def detector_figures(path: str, scenes: Path) -> dict:
    """Box AP and AR@100 on the scenes, in the frame stage=detector evaluates in (long side max_size)."""
    size = read_file(Path(path))["settings"].get("max_size", 320)
    examples, _ = load_examples([str(scenes)], None, size)
    metrics = box_metrics(load_detector(path), examples)
    return {k: metrics[k] for k in ("ap", "ap50", "ap75", "ar100", "images", "boxes")}


def prefill(scenes: Path, detector: str, work: Path, overrides: list[str]) -> Path:
    tag = hashlib.sha1(json.dumps([str(scenes), overrides]).encode()).hexdigest()[:10]
    out = work / f"semi-{tag}"
    shutil.rmtree(out, ignore_errors=True)  # measured afresh: a resumed run would time nothing
    shutil.rmtree(f"{out}-merged", ignore_errors=True)
    cfg = compose(
        [
            "stage=semi",
            f"input.path={scenes / 'pictures'}",
            f"detector.checkpoint={detector}",
            f"output.dir={out}",
            "semi.export=[coco]",
            *BASE,
            *overrides,
        ]
    )
    validate(cfg)
    start = time.time()
    run_stage(cfg)
    (out / "wall_seconds.txt").write_text(f"{time.time() - start:.2f}\n")
    return out


def prefill_figures(semi: Path, scenes: Path, args) -> dict:
    """Precision and coverage of the prefilled masks against the expert masks, and the prefill's speed."""
    expert = load(scenes / "instances.json")
    rows = read_masks(semi, columns=["file_name", "segmentation"]).to_pylist()
    images = read_images(semi).to_pylist()
    prefilled = matched = big = big_matched = 0
    for img in images:
        info, truth = expert[img["file_name"]]
        mine = [r["segmentation"] for r in rows if r["file_name"] == img["file_name"]]
        decided = review(mine, truth, info["height"], info["width"], keep_iou=args.keep_iou)
        areas = rle.area(truth, info["height"], info["width"]).tolist()
        prefilled += len(mine)
        matched += len(decided["kept"])
        big += sum(a >= args.min_area for a in areas)
        big_matched += sum(areas[e] >= args.min_area for _, e, _ in decided["kept"])
    seconds = [r["seconds"] for r in images if r["status"] == "ok"]
    return {
        "images": len(images),
        "prefilled": prefilled,
        "prefilled_per_image": round(prefilled / len(images), 2),
        "precision": round(matched / prefilled, 4) if prefilled else None,
        "expert_objects_min_area": big,
        "coverage": round(big_matched / big, 4) if big else None,
        "seconds_per_image": round(float(np.mean(seconds)), 3),
        "wall_seconds_per_image": round(float((semi / "wall_seconds.txt").read_text()) / len(images), 3),
    }


def merge_figures(semi: Path, scenes: Path, work: Path) -> dict:
    """The simulated annotator on the COCO pre-annotations, then stage=semi_merge on its result."""
    result = semi / "annotator_result.json"
    counts = annotate(semi / "preannotations" / "coco_instances.json", scenes / "instances.json", result)
    cfg = compose(
        [
            "stage=semi_merge",
            f"semi_merge.prefill={semi}",
            "semi_merge.format=coco",
            f"semi_merge.annotations={result}",
            f"output.dir={semi}-merged",
            *BASE,
        ]
    )
    merged = run_stage(cfg)["merge"]
    return {
        "annotator": counts,
        "work_saved": round(counts["kept"] / counts["expert"], 4) if counts["expert"] else None,
        "merge": merged,
    }


if __name__ == "__main__":
    main()
