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
from dataclasses import dataclass
from pathlib import Path

from data_engine.errors import ConfigError
from data_engine.io import coco, rle
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import Dataset
from data_engine.runtime import runs
from data_engine.schema import absolute, setting
from data_engine.synth import clicks


@dataclass(frozen=True)
class Annotate:
    # a data-engine output with exact masks (a synth output)
    source: str | None = setting(
        None, required="give a data-engine output with exact masks", exists="dir", hint="give a synth output"
    )
    click_fraction: float = setting(0.5, ge=0, le=1)  # share of the images annotated as click sessions; others COCO
    max_clicks: int = setting(3, ge=1)  # clicks per object: 1 to this many (first positive, then positive or negative)
    final_mask: bool = setting(True)  # sessions end with the exact mask (brush and eraser); false: the model's mask
    min_area: int = setting(16, ge=0)  # objects under this many pixels are not annotated
    seed: int = setting(0, ge=0)
    # stage 2: a stage=semi output of the same images, whose pre-annotations are reviewed
    prefill: str | None = setting(None, exists="dir", hint="give a stage=semi output.dir")
    keep_iou: float = setting(
        0.75, gt=0, le=1
    )  # stage 2: a prefilled mask at this IoU or more with an exact one is kept


def run(cfg: dict, settings: Annotate) -> dict:
    """Split the source's images into COCO and click-session exports; the counts of each."""
    start = time.time()
    settings = absolute(settings, ("source", "prefill"))
    out_dir = Path(cfg["output"]["dir"])
    source = Dataset.open(settings.source, "annotate.source", needs=("masks",))
    runs.prepare_output(out_dir, cfg, {"input_root": str(source.image_root) if source.image_root else None})
    if settings.prefill:
        return review_prefill(settings, out_dir, start)
    images = source_images(source, settings.min_area)
    seed = settings.seed
    clicked = clicks.click_images(sorted(images), settings.click_fraction, seed)
    sessions = [
        clicks.image_sessions(images[name], images[name]["objects"], seed, i, settings.max_clicks, settings.final_mask)
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


def review_prefill(settings: Annotate, out_dir: Path, start: float) -> dict:
    """Stage 2: the simulated annotators' pass over the prefill's COCO pre-annotations."""
    from data_engine.semi.annotator import annotate

    pre = Path(settings.prefill) / "preannotations" / "coco_instances.json"
    if not pre.is_file():
        raise ConfigError(
            f"annotate.prefill: {settings.prefill} has no {pre.name}: run stage=semi with coco in semi.export"
        )
    exact = Path(settings.source) / "instances.json"
    seen = accepted_masks(settings.prefill)
    if seen:  # the expert masks an accepted mask covers are not drawn again
        exact, covered = not_accepted(exact, seen, settings.keep_iou, out_dir / "expert_not_accepted.json")
    totals = annotate(pre, exact, out_dir / "annotations.json", settings.keep_iou, None, settings.min_area)
    if seen:
        totals.update(accepted=sum(map(len, seen.values())), accepted_matching_expert=covered)
    summary = {"output": str(out_dir), **totals, "seconds": round(time.time() - start, 2)}
    write_text_atomic(json.dumps(summary, indent=2), out_dir / "summary.json")
    return summary


def accepted_masks(prefill: str) -> dict[str, list[str]]:
    """{file_name: RLE counts} of the masks a verifier accepted in a stage=semi output (none: {})."""
    from data_engine.verifier.routes import ACCEPTED, route_of

    found: dict[str, list[str]] = {}
    rows = Dataset.open(prefill, "annotate.prefill").masks(columns=["file_name", "segmentation", "extra"])
    for row in rows.to_pylist():
        if route_of(row) == ACCEPTED:
            found.setdefault(row["file_name"], []).append(row["segmentation"])
    return found


def not_accepted(expert: Path, accepted: dict, keep_iou: float, out: Path) -> tuple[Path, int]:
    """The expert COCO file less the masks an accepted mask matches (IoU >= keep_iou, one to one, as the
    simulated annotator pairs masks), written to `out`; (out, how many were left out)."""
    from data_engine.semi.annotator import load, review

    images, annotations, covered = [], [], 0
    for name, (image, masks) in sorted(load(expert).items()):
        h, w = image["height"], image["width"]
        matched = {e for _, e, _ in review(accepted.get(name, []), masks, h, w, keep_iou)["kept"]}
        covered += len(matched)
        images.append(image)
        left = [counts for e, counts in enumerate(masks) if e not in matched]
        annotations += [coco.annotation(len(annotations) + k + 1, image["id"], c, h, w) for k, c in enumerate(left)]
    coco.write(out, images, annotations)
    return out, covered


def source_images(source: Dataset, min_area: int) -> dict[str, dict]:
    """{file_name: image with its objects (id, counts, mask) of at least min_area px, and how many were skipped}."""
    columns = ["file_name", "height", "width", "segmentation", "area", "mask_id"]
    images: dict[str, dict] = {}
    for row in source.masks(columns=columns).to_pylist():
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
    coco_images = [coco.image_entry(img, n + 1) for n, img in enumerate(images)]
    annotations = [
        coco.annotation(obj["id"], n + 1, obj["counts"], img["height"], img["width"], area=obj["area"])
        for n, img in enumerate(images)
        for obj in img["objects"]
    ]
    coco.write(path, coco_images, annotations)
