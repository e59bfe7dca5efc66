"""Labelled masks for the verifier, from the outputs that already hold people's (or experts') verdicts.

- a semi_merge output: each prefilled mask the annotators reviewed is acceptable when they kept it,
  or edited it by little (IoU with their mask >= label_iou), and not when they deleted it or changed it
  more; masks the verifier accepted without review are left out (nobody judged them). mask_id joins
  the merge's rows (`extra.prefill_mask_id`) to the prefill run's masks (`semi_merge.prefill`).
- an audit output: each generated mask of `pairs.parquet` is acceptable when its IoU with an expert
  mask (one to one) is >= label_iou; `pred_mask_id` joins it to the audited dataset's masks.

An example is one image: {source, file_name, image (its path), rows (mask rows: what the model sees),
labels ([N] 0/1)}; `featurize` turns examples into arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_engine.errors import UserError
from data_engine.io.dataset import read_masks, read_run_record, shard_files
from data_engine.io.images import load_rgb
from data_engine.io.inputs import image_id
from data_engine.verifier.features import mask_crops, mask_scalars
from data_engine.verifier.score import ACCEPTED, route_of

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
    record = read_run_record(path, "verifier.data", WHAT, missing_ok=True)
    if (record.get("config") or {}).get("stage", {}).get("name") == "semi_merge":
        return "semi_merge"
    raise VerifierDataError(f"verifier.data: {path} is neither a semi_merge nor an audit output; {WHAT}")


def merge_examples(path: Path, label_iou: float) -> list[dict]:
    """The reviewed prefilled masks of a semi_merge output, labelled by what the annotators did."""
    record = read_run_record(path, "verifier.data", WHAT)
    prefill = Path(record["config"]["semi_merge"]["prefill"])
    verdicts = {}  # prefill mask_id -> acceptable
    for row in read_masks(path, ["source", "extra"]).to_pylist():
        extra = json.loads(row["extra"] or "{}")
        if row["source"] == KEPT:
            verdicts[extra["prefill_mask_id"]] = 1
        elif row["source"] == EDITED:
            verdicts[extra["prefill_mask_id"]] = int(extra["iou_with_prefill"] >= label_iou)
    files = [str(p) for p in shard_files(path, "merge")]
    merged = pq.ParquetDataset(files).read(columns=["file_name", "status"]).to_pylist() if files else []
    reviewed = {r["file_name"] for r in merged if r["status"] == "ok"}
    rows = [r for r in read_masks(prefill).to_pylist() if r["file_name"] in reviewed and route_of(r) != ACCEPTED]
    labels = [verdicts.get(r["mask_id"], 0) for r in rows]  # neither kept nor edited: deleted
    return group(rows, labels, image_root(prefill, record.get("input_root")), str(path))


def audit_examples(path: Path, label_iou: float) -> list[dict]:
    """The generated masks of an audit output, labelled by their IoU with the matched expert mask."""
    settings = json.loads((path / "metrics.json").read_text())["settings"]
    pred = Path(settings["pred"])
    if not pred.is_dir():
        raise VerifierDataError(
            f"verifier.data: {path} audited a COCO file ({pred}), which holds no SAM scores; audit a data-engine output"
        )
    pairs = pq.read_table(path / "pairs.parquet", columns=["pred_mask_id", "iou"]).to_pylist()
    iou = {p["pred_mask_id"]: p["iou"] or 0.0 for p in pairs if p["pred_mask_id"] is not None}
    rows = [r for r in read_masks(pred).to_pylist() if r["mask_id"] in iou]
    labels = [int(iou[r["mask_id"]] >= label_iou) for r in rows]
    return group(rows, labels, image_root(pred, None), str(path))


def image_root(dataset: Path, recorded: str | None) -> Path:
    """Where a dataset's images are: the root given, its run's input folder, or pictures/ (synth)."""
    root = recorded or read_run_record(dataset, "verifier.data", WHAT, missing_ok=True).get("input_root")
    return Path(root) if root else dataset / "pictures"


def group(rows: list[dict], labels: list[int], root: Path, source: str) -> list[dict]:
    """One example per image, in file-name order."""
    by_name: dict[str, dict] = {}
    for row, label in zip(rows, labels):
        ex = by_name.setdefault(
            row["file_name"],
            {"source": source, "file_name": row["file_name"], "image": str(root / row["file_name"]), "rows": []},
        )
        ex["rows"].append(row)
        ex.setdefault("labels", []).append(label)
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


def featurize(examples: list[dict], crop_size: int, context: float, max_pixels: int) -> tuple[dict, list[dict]]:
    """Arrays {crops [N, 4, S, S] uint8, scalars [N, F] float32, labels [N] float32, image [N] int: the
    example's index} over every mask of the examples, and the images left out, each with its reason."""
    crops, scalars, labels, index, skipped = [], [], [], [], []
    for k, ex in enumerate(examples):
        try:
            image = load_rgb(ex["image"], max_pixels)
        except Exception as err:  # an unreadable image costs its masks, not the run
            skipped.append({"source": ex["source"], "file_name": ex["file_name"], "reason": f"image not read: {err}"})
            continue
        size = (ex["rows"][0]["height"], ex["rows"][0]["width"])
        if image.shape[:2] != size:
            reason = (
                f"size mismatch: the masks are {size[1]}x{size[0]}, {ex['image']} is {image.shape[1]}x{image.shape[0]}"
            )
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
