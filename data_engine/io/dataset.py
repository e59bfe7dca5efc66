"""The project's Parquet layout: schemas, atomic shard writes, and reading a dataset back."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MASK_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("segmentation", pa.string()),  # COCO compressed RLE counts; size is [height, width]
        ("area", pa.int64()),
        ("bbox", pa.list_(pa.float64(), 4)),  # XYWH
        ("predicted_iou", pa.float32()),
        ("stability_score", pa.float32()),
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

# Dictionary encoding only where values repeat; never on the RLE column.
DICTIONARY_COLUMNS = ["file_name", "stage", "source", "model", "status"]


def table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) -> table; keys missing from a row become nulls."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.table(columns, schema=schema)


def write_atomic(tbl: pa.Table, path: str | Path) -> None:
    """Write a Parquet file under a temporary name, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    use_dict = [c for c in DICTIONARY_COLUMNS if c in tbl.column_names]
    pq.write_table(tbl, tmp, compression="zstd", use_dictionary=use_dict, row_group_size=64_000)
    os.replace(tmp, path)


def write_text_atomic(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def write_shard(out_dir: str | Path, shard_id: str, masks: list[dict], images: list[dict]) -> None:
    """One shard's masks/ and images/ files (images last: its presence means the shard is whole)."""
    out_dir = Path(out_dir)
    write_atomic(table(masks, MASK_SCHEMA), out_dir / "masks" / f"{shard_id}.parquet")
    write_atomic(table(images, IMAGE_SCHEMA), out_dir / "images" / f"{shard_id}.parquet")


def read_masks(dataset: str | Path, columns=None) -> pa.Table:
    return read_part(dataset, "masks", MASK_SCHEMA, columns)


def read_images(dataset: str | Path, columns=None) -> pa.Table:
    return read_part(dataset, "images", IMAGE_SCHEMA, columns)


def read_part(dataset, part: str, schema: pa.Schema, columns) -> pa.Table:
    folder = Path(dataset) / part
    files = sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    return pq.ParquetDataset(files, schema=schema).read(columns=columns)
