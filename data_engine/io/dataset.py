"""The project's Parquet layout: schemas, atomic shard writes, and reading a dataset back."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_engine.errors import UserError
from data_engine.io import rle
from data_engine.io.atomic import atomic_path
from data_engine.io.inputs import JsonFileError, read_json

MASK_SCHEMA = pa.schema(
    [
        ("mask_id", pa.int64()),  # stable: image, stage and the mask's place among the image's masks
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("segmentation", pa.string()),  # COCO compressed RLE counts; size is [height, width]
        ("area", pa.int64()),
        ("bbox", pa.list_(pa.float64(), 4)),  # XYWH
        ("predicted_iou", pa.float32()),
        ("stability_score", pa.float32()),
        ("verifier_score", pa.float32()),  # the mask verifier's score (verifier.checkpoint); null: not scored
        ("point_coords", pa.list_(pa.list_(pa.float64(), 2))),
        ("crop_box", pa.list_(pa.float64(), 4)),  # XYWH
        ("stage", pa.string()),
        ("source", pa.string()),
        ("model", pa.string()),
        ("extra", pa.string()),  # JSON: provenance a stage or format carries
    ]
)

IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("status", pa.string()),  # ok | failed
        ("error", pa.string()),
        ("num_masks", pa.int32()),
        ("seconds", pa.float64()),
    ]
)

SHARDS_PER_FOLDER = 1000
# Dictionary encoding only where values repeat; never on the RLE column.
DICTIONARY_COLUMNS = ["file_name", "stage", "source", "model", "status"]


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) -> table; keys missing from a row become nulls."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.table(columns, schema=schema)


def write_atomic(tbl: pa.Table, path: str | Path) -> None:
    """Write a Parquet file atomically (io.atomic): readers never see a partial file."""
    use_dict = [c for c in DICTIONARY_COLUMNS if c in tbl.column_names]
    with atomic_path(path) as tmp:
        pq.write_table(tbl, tmp, compression="zstd", use_dictionary=use_dict, row_group_size=64_000)


def mask_row(
    image: dict,
    counts: str,
    *,
    stage: str,
    source: str,
    model: str | None = None,
    extra: dict | None = None,
    **fields,
) -> dict:
    """The one builder of a MASK_SCHEMA row: the image's fields, the RLE, area and box (computed from
    the RLE unless given), provenance, and any other schema field (predicted_iou, point_coords, ...)."""
    h, w = image["height"], image["width"]
    unknown = set(fields) - set(MASK_SCHEMA.names)
    if unknown:
        raise TypeError(f"not mask fields: {sorted(unknown)}")
    if "area" not in fields:
        fields["area"] = int(rle.area([counts], h, w)[0])
    if "bbox" not in fields:
        fields["bbox"] = [float(v) for v in rle.bbox([counts], h, w)[0]]
    return {
        **dict.fromkeys(MASK_SCHEMA.names),
        **{k: image[k] for k in ("image_id", "file_name", "height", "width")},
        "segmentation": counts,
        **fields,
        "stage": stage,
        "source": source,
        "model": model,
        "extra": None if extra is None else json.dumps(extra, sort_keys=True, default=str),
    }


def mask_id(image_id: int, stage: str, index: int) -> int:
    """Stable 63-bit id of the `index`-th mask a stage wrote for an image: the same on every rerun."""
    digest = hashlib.sha1(f"{image_id}/{stage}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def with_mask_ids(masks: list[dict]) -> list[dict]:
    """Give every row without a mask_id its stable id, numbering each image's masks of a stage in order."""
    seen = Counter()
    for row in masks:
        key = (row["image_id"], row["stage"])
        if row.get("mask_id") is None:
            row["mask_id"] = mask_id(row["image_id"], row["stage"], seen[key])
        seen[key] += 1
    return masks


def shard_name(index: int) -> str:
    """The id of the index-th shard of a plan: nine digits, so ids sort as text up to a billion shards."""
    return f"shard-{index:09d}"


def shard_path(out_dir: str | Path, part: str, shard_id: str, suffix: str = ".parquet") -> Path:
    """Where a shard's file of one part (masks, images, _done, ...) lives: folders of SHARDS_PER_FOLDER
    shards by the number the id ends with, so that no folder holds more than a few thousand files."""
    digits = re.search(r"(\d+)$", shard_id)
    group = f"{int(digits.group(1)) // SHARDS_PER_FOLDER:06d}" if digits else "other"
    return Path(out_dir) / part / group / f"{shard_id}{suffix}"


def shard_files(out_dir: str | Path, part: str, suffix: str = ".parquet") -> list[Path]:
    """Every shard file of a part, in shard order (also a flat folder's files); hidden ones are the atomic
    writer's temporary files (a write under way, or cut short by a killed worker)."""
    folder = Path(out_dir) / part
    found = folder.rglob(f"*{suffix}") if folder.is_dir() else []
    return sorted((p for p in found if not p.name.startswith(".")), key=lambda p: p.name)


def write_shard(out_dir: str | Path, shard_id: str, masks: list[dict], images: list[dict]) -> None:
    """One shard's masks/ and images/ files (images last: its presence means the shard is whole)."""
    write_atomic(table(with_mask_ids(masks), MASK_SCHEMA), shard_path(out_dir, "masks", shard_id))
    write_atomic(table(images, IMAGE_SCHEMA), shard_path(out_dir, "images", shard_id))


def read_masks(dataset: str | Path, columns=None) -> pa.Table:
    return read_part(dataset, "masks", MASK_SCHEMA, columns)


def read_images(dataset: str | Path, columns=None) -> pa.Table:
    return read_part(dataset, "images", IMAGE_SCHEMA, columns)


def read_part(dataset, part: str, schema: pa.Schema, columns) -> pa.Table:
    files = [str(p) for p in shard_files(dataset, part)]
    if not files:
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    return pq.ParquetDataset(files, schema=schema).read(columns=columns)


# ----------------------------------------------------------------------------------------------
# Run records: another stage's output read as input
# ----------------------------------------------------------------------------------------------

RERUN = "rerun the stage that wrote it, or give another output folder"


class RunRecordError(UserError, ValueError):
    """A data-engine output folder given as input (or resumed) has no usable run.json."""


def read_run_record(
    folder: str | Path, key: str, what_to_do: str = RERUN, missing_ok: bool = False, fingerprint: bool = False
) -> dict:
    """The checked run.json of a data-engine output folder ({} when it has none and `missing_ok`): a JSON
    object whose `input_root` is a path or null, `config` an object and `fingerprint` a string (needed with
    `fingerprint`: to resume or to record what it was made from). Anything else is a RunRecordError naming
    `key` (the setting that gave the folder), the file and `what_to_do`."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        if missing_ok:
            return {}
        raise RunRecordError(f"{key}: {folder} holds no run.json, so it is not a data-engine output; {what_to_do}")
    try:
        record = read_json(path, "run record")
    except JsonFileError as err:
        raise RunRecordError(f"{key}: {path} is not a usable run record ({err.reason}); {what_to_do}") from None
    problem = run_record_problem(record, fingerprint)
    if problem:
        raise RunRecordError(f"{key}: {path} is not a usable run record ({problem}); {what_to_do}")
    return record


def run_record_problem(record, fingerprint: bool) -> str | None:
    """What makes a parsed run.json unusable, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("fingerprint"), str) and (fingerprint or "fingerprint" in record):
        return "no fingerprint" if "fingerprint" not in record else f"fingerprint is {record['fingerprint']!r}"
    if not isinstance(record.get("input_root"), (str, type(None))):
        return f"input_root is {record['input_root']!r}, not a folder"
    if not isinstance(record.get("config", {}), dict):
        return "config is not an object"
    return None
