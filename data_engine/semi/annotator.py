"""A simulated annotator for stage 2's human pass, on images whose exact masks are known.

It reviews each image's prefilled masks as a careful annotator would: a prefilled mask that matches
an expert mask (IoU >= keep_iou; one to one, best pairs first) is kept unchanged, every other
prefilled mask is deleted, and every expert mask that no kept mask matches is drawn. With
`fix_below`, a kept mask whose IoU is under fix_below is redrawn as its expert mask (an edit).
Expert masks under `min_area` px are not drawn.

It reads the pre-annotations and the expert masks as COCO instances files (the prefill run's
preannotations/coco_instances.json; e.g. the synth stage's instances.json) and writes its result as
a COCO instances file, as an annotation tool exports it, so the merge reads it through the real
importer. Images are paired by file_name.

    python -m data_engine.semi.annotator SEMI/preannotations/coco_instances.json SYNTH/instances.json OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_engine.errors import UserError
from data_engine.importers.coco import segmentation_counts
from data_engine.importers.validate import Rejected
from data_engine.io import coco, rle
from data_engine.io.match import greedy_pairs


class AnnotatorError(UserError, ValueError):
    """The pre-annotations and expert masks do not describe the same images."""


def review(
    prefilled: list[str],
    expert: list[str],
    height: int,
    width: int,
    keep_iou: float = 0.75,
    fix_below: float | None = None,
    min_area: int = 0,
) -> dict:
    """One image's decisions, as indices: {"kept": [(p, e, iou)], "fixed": [(p, e, iou)], "deleted": [p],
    "drawn": [e]} for prefilled masks p and expert masks e (RLE counts of an height x width image)."""
    iou = rle.iou_matrix(prefilled, expert, height, width)  # [P, E]
    pairs = greedy_pairs(iou, keep_iou)  # best pairs first, one to one
    used_p, used_e = {p for p, _, _ in pairs}, {e for _, e, _ in pairs}
    fixed = [pair for pair in pairs if fix_below is not None and pair[2] < fix_below]
    areas = rle.area(expert, height, width)
    return {
        "kept": [pair for pair in pairs if pair not in fixed],
        "fixed": fixed,
        "deleted": sorted(set(range(len(prefilled))) - used_p),
        "drawn": [e for e in range(len(expert)) if e not in used_e and areas[e] >= min_area],
    }


def annotate(
    preannotations: str | Path,
    expert: str | Path,
    out: str | Path,
    keep_iou: float = 0.75,
    fix_below: float | None = None,
    min_area: int = 0,
) -> dict:
    """Review every image of the pre-annotations against the expert masks; write the result as COCO
    at `out`; return the counts (prefilled, kept, fixed, deleted, drawn, expert)."""
    pre, truth = load(preannotations), load(expert)
    missing = sorted(set(pre) - set(truth))
    if missing:
        raise AnnotatorError(
            f"{len(missing)} images of {preannotations} have no expert masks in {expert} (first: {missing[0]}); "
            "give the expert file of the same images"
        )
    images, annotations = [], []
    totals = dict.fromkeys(("images", "prefilled", "kept", "fixed", "deleted", "drawn", "expert"), 0)
    for name in sorted(pre):
        image, pre_masks = pre[name]
        expert_masks = truth[name][1]
        decided = review(pre_masks, expert_masks, image["height"], image["width"], keep_iou, fix_below, min_area)
        images.append(image)
        annotations += result_annotations(image, pre_masks, expert_masks, decided, len(annotations))
        for key in ("kept", "fixed", "deleted", "drawn"):
            totals[key] += len(decided[key])
        totals.update(
            images=totals["images"] + 1,
            prefilled=totals["prefilled"] + len(pre_masks),
            expert=totals["expert"] + len(expert_masks),
        )
    coco.write(out, images, annotations)
    return totals


def result_annotations(image: dict, pre: list[str], expert: list[str], decided: dict, start: int) -> list[dict]:
    """The image's masks after the review: kept prefilled masks as they were, then fixed and drawn ones."""
    masks = [(pre[p], "kept") for p, _, _ in decided["kept"]]
    masks += [(expert[e], "fixed") for _, e, _ in decided["fixed"]]
    masks += [(expert[e], "drawn") for e in decided["drawn"]]
    h, w = image["height"], image["width"]
    return [
        coco.annotation(start + k + 1, image["id"], counts, h, w, annotator="simulated", action=action)
        for k, (counts, action) in enumerate(masks)
    ]


def load(path: str | Path) -> dict[str, tuple[dict, list[str]]]:
    """file_name -> ({id, file_name, height, width}, [RLE counts of its annotations]) of a COCO file."""
    doc = coco.load(path)
    images = {img["id"]: {k: img[k] for k in ("id", "file_name", "height", "width")} for img in doc["images"]}
    masks: dict = {img_id: [] for img_id in images}
    for ann in doc["annotations"]:
        if ann.get("image_id") not in images:
            raise AnnotatorError(
                f"{path}: annotation {ann.get('id')} refers to image {ann.get('image_id')!r}, not listed"
            )
        img = images[ann["image_id"]]
        try:
            counts, _ = segmentation_counts(ann["segmentation"], img["height"], img["width"])
        except Rejected as err:
            raise AnnotatorError(f"{path}: annotation {ann.get('id')}: {err}") from None
        masks[ann["image_id"]].append(counts)
    return {img["file_name"]: (img, masks[img_id]) for img_id, img in images.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preannotations", help="the prefill run's preannotations/coco_instances.json")
    parser.add_argument("expert", help="COCO instances file with the exact masks of the same images")
    parser.add_argument("out", help="where to write the annotator's result (COCO instances JSON)")
    parser.add_argument("--keep-iou", type=float, default=0.75, help="keep a prefilled mask at this IoU or more")
    parser.add_argument("--fix-below", type=float, default=None, help="redraw kept masks under this IoU (edits)")
    parser.add_argument("--min-area", type=int, default=0, help="expert masks under this many px are not drawn")
    args = parser.parse_args(argv)
    print(
        json.dumps(annotate(args.preannotations, args.expert, args.out, args.keep_iou, args.fix_below, args.min_area))
    )


if __name__ == "__main__":
    main()
