"""Labelled masks for the verifier, from the outputs that already hold people's (or experts') verdicts.

- a semi_merge output: each prefilled mask the annotators reviewed is acceptable when they kept it,
  or edited it by little (IoU with their mask >= label_iou), and not when they deleted it or changed it
  more; masks the verifier accepted without review are left out (nobody judged them). mask_id joins
  the merge's rows (`extra.prefill_mask_id`) to the prefill run's masks (`semi_merge.prefill`).
- an audit output: each generated mask of the audited images is acceptable when its IoU with the
  expert mask it was paired with (one to one) is >= label_iou: `Dataset.join_audit` joins the audit's
  pairs to the audited dataset's masks (`pred_mask_id` = `mask_id`).

Both are read through io.dataset.Dataset, images too (as the run that made the masks read them). An
example is one image: {source, file_name, image_id, dataset, rows (mask rows: what the model sees),
labels ([N] 0/1)}; `featurize` turns examples into arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from data_engine.errors import UserError
from data_engine.io.dataset import Dataset, DatasetError
from data_engine.io.inputs import image_id, read_json
from data_engine.verifier.features import mask_crops, mask_scalars
from data_engine.verifier.routes import ACCEPTED, route_of

KEPT, EDITED = "prefill_kept", "prefill_edited"  # semi_merge's sources (data_engine.semi.merge)
WHAT = "give output folders of stage=semi_merge or stage=audit"


class VerifierDataError(UserError, ValueError):
    """A verifier.data entry that holds no labels the verifier can learn from."""


def load_examples(paths: list[str], label_iou: float) -> list[dict]:
    """Every labelled image of the semi_merge and audit outputs in `paths`."""
    examples = []
    for path in map(Path, paths):
        read = audit_examples if source_kind(path) == "audit" else merge_examples
        examples += read(path, label_iou)
    return examples


def source_kind(path: Path) -> str:
    """ "audit" or "semi_merge", or a VerifierDataError for any other folder."""
    if (path / "pairs.parquet").is_file() and (path / "metrics.json").is_file():
        return "audit"
    try:
        stage = Dataset.open(path, "verifier.data", WHAT).run.get("stage", {}).get("name")
    except DatasetError:
        stage = None
    if stage == "semi_merge":
        return "semi_merge"
    raise VerifierDataError(f"verifier.data: {path} is neither a semi_merge nor an audit output; {WHAT}")


def merge_examples(path: Path, label_iou: float) -> list[dict]:
    """The reviewed prefilled masks of a semi_merge output, labelled by what the annotators did."""
    merged = Dataset.open(path, "verifier.data", WHAT, fingerprint=True)
    verdicts = {}  # prefill mask_id -> acceptable
    for row in merged.masks(columns=["source", "extra"]).to_pylist():
        extra = json.loads(row["extra"] or "{}")
        if row["source"] == KEPT:
            verdicts[extra["prefill_mask_id"]] = 1
        elif row["source"] == EDITED:
            verdicts[extra["prefill_mask_id"]] = int(extra["iou_with_prefill"] >= label_iou)
    reviewed = merged.images(filter=pc.field("status") == "ok", columns=["file_name"])["file_name"].to_pylist()
    # The prefill run's masks (their scores and pixels), read from the images the merge read
    prefill = Dataset.open(merged.run["semi_merge"]["prefill"], "verifier.data", WHAT, image_root=merged.image_root)
    rows = [r for r in prefill.masks(pc.field("file_name").isin(reviewed)).to_pylist() if route_of(r) != ACCEPTED]
    labels = [verdicts.get(r["mask_id"], 0) for r in rows]  # neither kept nor edited: deleted
    return group(rows, labels, prefill, str(path))


def audit_examples(path: Path, label_iou: float) -> list[dict]:
    """The generated masks of an audit output, labelled by their IoU with the matched expert mask."""
    pred = Path(read_json(path / "metrics.json", "audit metrics")["settings"]["pred"])
    if not pred.is_dir():
        raise VerifierDataError(
            f"verifier.data: {path} audited a COCO file ({pred}), which holds no SAM scores; audit a data-engine output"
        )
    dataset = Dataset.open(pred, "verifier.data", WHAT)
    joined = dataset.join_audit(path).to_pylist()
    rows = [r for r in joined if r["expert_image_id"] is not None]  # the masks of the audited images
    labels = [int((r["iou"] or 0.0) >= label_iou) for r in rows]  # unmatched: iou null
    return group(rows, labels, dataset, str(path))


def group(rows: list[dict], labels: list[int], dataset: Dataset, source: str) -> list[dict]:
    """One example per image, in file-name order: {source, file_name, image_id, dataset (whose image it
    is), rows, labels}."""
    by_name: dict[str, dict] = {}
    for row, label in zip(rows, labels):
        ex = by_name.setdefault(
            row["file_name"],
            {
                "source": source,
                "file_name": row["file_name"],
                "image_id": row["image_id"],
                "dataset": dataset,
                "rows": [],
                "labels": [],
            },
        )
        ex["rows"].append(row)
        ex["labels"].append(label)
    return [by_name[name] for name in sorted(by_name)]


def held_out(examples: list[dict], val_fraction: float) -> np.ndarray:
    """[len(examples)] bool: the images held out for metrics: the val_fraction of them (at least one, and
    one image left to train on) whose hash of output folder name and file name is smallest, so the
    choice depends on the images alone, not on their order."""
    keys = [image_id(f"{Path(ex['source']).name}/{ex['file_name']}") for ex in examples]
    count = min(max(round(val_fraction * len(keys)), 1), len(keys) - 1) if val_fraction > 0 else 0
    held = np.zeros(len(keys), dtype=bool)
    held[np.argsort(keys, kind="stable")[:count]] = True
    return held


def featurize(examples: list[dict], crop_size: int, context: float) -> tuple[dict, list[dict]]:
    """Arrays {crops [N, 4, S, S] uint8, scalars [N, F] float32, labels [N] float32, image [N] int: the
    example's index} over every mask of the examples, and the images left out, each with its reason."""
    crops, scalars, labels, index, skipped = [], [], [], [], []
    for k, ex in enumerate(examples):
        try:
            image = ex["dataset"].image(ex["image_id"])  # read as the run that made the masks read it
        except Exception as err:  # an unreadable image costs its masks, not the run
            skipped.append({"source": ex["source"], "file_name": ex["file_name"], "reason": f"image not read: {err}"})
            continue
        size = (ex["rows"][0]["height"], ex["rows"][0]["width"])
        if image.shape[:2] != size:
            reason = f"size mismatch: the masks are {size[1]}x{size[0]}, the image is {image.shape[1]}x{image.shape[0]}"
            skipped.append({"source": ex["source"], "file_name": ex["file_name"], "reason": reason})
            continue
        crops.append(mask_crops(image, ex["rows"], crop_size, context))
        scalars.append(mask_scalars(ex["rows"]))
        labels += ex["labels"]
        index += [k] * len(ex["rows"])
    arrays = {
        "crops": np.concatenate(crops) if crops else np.zeros((0, 4, crop_size, crop_size), np.uint8),
        "scalars": np.concatenate(scalars) if scalars else np.zeros((0, 4), np.float32),
        "labels": np.asarray(labels, dtype=np.float32),
        "image": np.asarray(index, dtype=np.int64),
    }
    return arrays, skipped


def subset(arrays: dict, keep: np.ndarray) -> dict:
    return {k: v[keep] for k, v in arrays.items()}
