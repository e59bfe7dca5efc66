"""The annotate stage: simulated annotators' exports, drawn from a synth output's exact masks.

Stage 1 (annotate.prefill null): output.dir/annotations.json (COCO: the masks of the images annotated
in another tool) and output.dir/clicks.json (click sessions of the other images, `synth.clicks`), ready
for `stage=assisted assisted.annotations=OUT/annotations.json assisted.clicks=OUT/clicks.json`.

Stage 2 (annotate.prefill=SEMI, a stage=semi output of the same images): the annotators' pass over the
pre-annotations (`semi.annotator`: prefilled masks kept, deleted or redrawn, missing objects drawn)
as output.dir/annotations.json, ready for `stage=semi_merge semi_merge.format=coco`. Masks a verifier
accepted are not in the pre-annotations; the annotators see them (as a tool shows locked masks) and
do not draw the objects they cover: output.dir/expert_not_accepted.json is what is left to review.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from data_engine.errors import ConfigError
from data_engine.io import coco, rle
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import read_masks, read_run_record
from data_engine.runtime import runs
from data_engine.synth import clicks


def run(cfg: dict) -> dict:
    """Split the source's images into COCO and click-session exports; the counts of each."""
    start = time.time()
    a = check(cfg["annotate"])
    out_dir = Path(cfg["output"]["dir"])
    if not (Path(a["source"]) / "masks").is_dir():
        raise ConfigError(
            f"annotate.source: {a['source']} has no masks/: give a data-engine output (e.g. a synth output)"
        )
    runs.prepare_output(out_dir, cfg, {"input_root": input_root(a["source"])})
    if a["prefill"]:
        return review_prefill(a, out_dir, start)
    images = source_images(a["source"], a["min_area"])
    clicked = clicks.click_images(sorted(images), a["click_fraction"], a["seed"])
    sessions = [
        clicks.image_sessions(images[name], images[name]["objects"], a["seed"], i, a["max_clicks"], a["final_mask"])
        for i, name in enumerate(sorted(images))
        if name in clicked
    ]
    write_text_atomic(json.dumps({"images": sessions}), out_dir / "clicks.json")
    exported = [images[name] for name in sorted(images) if name not in clicked]
    write_coco(out_dir / "annotations.json", exported)
    summary = {
        "output": str(out_dir),
        "images": len(images),
        "coco_images": len(exported),
        "coco_masks": sum(len(img["objects"]) for img in exported),
        "click_images": len(sessions),
        "click_objects": sum(len(s["objects"]) for s in sessions),
        "clicks": sum(len(o["clicks"]) for s in sessions for o in s["objects"]),
        "masks_skipped_small": sum(img["skipped"] for img in images.values()),
        "seconds": round(time.time() - start, 2),
    }
    write_text_atomic(json.dumps(summary, indent=2), out_dir / "summary.json")
    return summary


def review_prefill(a: dict, out_dir: Path, start: float) -> dict:
    """Stage 2: the simulated annotators' pass over the prefill's COCO pre-annotations."""
    from data_engine.semi.annotator import annotate

    pre = Path(a["prefill"]) / "preannotations" / "coco_instances.json"
    if not pre.is_file():
        raise ConfigError(
            f"annotate.prefill: {a['prefill']} has no {pre.name}: run stage=semi with coco in semi.export"
        )
    expert, seen = Path(a["source"]) / "instances.json", accepted_masks(a["prefill"])
    if seen:
        expert, covered = not_accepted(expert, seen, a["keep_iou"], out_dir / "expert_not_accepted.json")
    totals = annotate(pre, expert, out_dir / "annotations.json", a["keep_iou"], None, a["min_area"])
    if seen:
        totals.update(accepted=sum(map(len, seen.values())), accepted_matching_expert=covered)
    summary = {"output": str(out_dir), **totals, "seconds": round(time.time() - start, 2)}
    write_text_atomic(json.dumps(summary, indent=2), out_dir / "summary.json")
    return summary


def accepted_masks(prefill: str) -> dict[str, list[str]]:
    """{file_name: RLE counts} of the masks a verifier accepted in a stage=semi output (none: {})."""
    from data_engine.verifier.score import ACCEPTED, route_of

    found: dict[str, list[str]] = {}
    for row in read_masks(prefill, ["file_name", "segmentation", "extra"]).to_pylist():
        if route_of(row) == ACCEPTED:
            found.setdefault(row["file_name"], []).append(row["segmentation"])
    return found


def not_accepted(expert: Path, accepted: dict, keep_iou: float, out: Path) -> tuple[Path, int]:
    """The expert COCO file less the masks an accepted mask matches (IoU >= keep_iou, one to one),
    written to `out`; (out, how many were left out)."""
    from data_engine.semi.annotator import load, review

    images, annotations, covered = [], [], 0
    for name, (image, masks) in sorted(load(expert).items()):
        h, w = image["height"], image["width"]
        matched = {e for _, e, _ in review(accepted.get(name, []), masks, h, w, keep_iou)["kept"]}
        covered += len(matched)
        images.append(image)
        left = [c for e, c in enumerate(masks) if e not in matched]
        annotations += [
            {
                "id": len(annotations) + k + 1,
                "image_id": image["id"],
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": {"size": [h, w], "counts": counts},
                "area": int(rle.area([counts], h, w)[0]),
                "bbox": rle.bbox([counts], h, w)[0].tolist(),
            }
            for k, counts in enumerate(left)
        ]
    coco.write(out, images, annotations)
    return out, covered


def check(a: dict) -> dict:
    """The annotate section, or a ConfigError naming the key."""
    source = Path(str(a["source"])).expanduser() if a["source"] else None
    if source is None or not source.is_dir():
        raise ConfigError(f"annotate.source: {a['source']} is not a folder: give a data-engine output with exact masks")
    if not (isinstance(a["click_fraction"], (int, float)) and 0 <= a["click_fraction"] <= 1):
        raise ConfigError(f"annotate.click_fraction: must lie in [0, 1], got {a['click_fraction']!r}")
    for key, low in (("max_clicks", 1), ("min_area", 0), ("seed", 0)):
        if not isinstance(a[key], int) or isinstance(a[key], bool) or a[key] < low:
            raise ConfigError(f"annotate.{key}: must be an integer >= {low}, got {a[key]!r}")
    if not isinstance(a["final_mask"], bool):
        raise ConfigError(f"annotate.final_mask: must be true or false, got {a['final_mask']!r}")
    if a["prefill"] and not Path(str(a["prefill"])).expanduser().is_dir():
        raise ConfigError(f"annotate.prefill: {a['prefill']} is not a folder: give a stage=semi output.dir")
    if not (isinstance(a["keep_iou"], (int, float)) and 0 < a["keep_iou"] <= 1):
        raise ConfigError(f"annotate.keep_iou: must lie in (0, 1], got {a['keep_iou']!r}")
    prefill = str(Path(a["prefill"]).expanduser().resolve()) if a["prefill"] else None
    return {**a, "source": str(source.resolve()), "prefill": prefill}


def input_root(source: str) -> str | None:
    """The source's image folder (its run.json input_root)."""
    return read_run_record(source, "annotate.source", missing_ok=True).get("input_root")


def source_images(source: str, min_area: int) -> dict[str, dict]:
    """{file_name: image with its objects (id, counts, mask) of at least min_area px, and how many were skipped}."""
    columns = ["file_name", "height", "width", "segmentation", "area", "mask_id"]
    images: dict[str, dict] = {}
    for row in read_masks(source, columns).to_pylist():
        image = images.setdefault(
            row["file_name"],
            {
                "file_name": row["file_name"],
                "height": row["height"],
                "width": row["width"],
                "objects": [],
                "skipped": 0,
            },
        )
        if row["area"] < min_area:
            image["skipped"] += 1
            continue
        mask = rle.decode(row["segmentation"], row["height"], row["width"])
        image["objects"].append(
            {"id": row["mask_id"], "counts": row["segmentation"], "mask": mask, "area": row["area"]}
        )
    return images


def write_coco(path: Path, images: list[dict]) -> None:
    """A COCO instances file of the images' objects (RLE; ids from the source's mask ids)."""
    coco_images = [
        {"id": n + 1, "file_name": img["file_name"], "height": img["height"], "width": img["width"]}
        for n, img in enumerate(images)
    ]
    annotations = [
        {
            "id": obj["id"],
            "image_id": n + 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": {"size": [img["height"], img["width"]], "counts": obj["counts"]},
            "area": obj["area"],
            "bbox": rle.bbox([obj["counts"]], img["height"], img["width"])[0].tolist(),
        }
        for n, img in enumerate(images)
        for obj in img["objects"]
    ]
    coco.write(path, coco_images, annotations)
