"""The project's Parquet layout: schemas, atomic shard writes, and reading a dataset back (`Dataset`)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from data_engine.errors import UserError
from data_engine.io import coco, inputs, rle
from data_engine.io.atomic import atomic_path
from data_engine.io.hierarchy import with_hierarchy
from data_engine.io.images import load_rgb
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
        ("parent_mask_id", pa.int64()),  # the smallest other mask of the image holding most of it (io/hierarchy.py)
        ("depth", pa.int32()),  # 0: no other mask of the image holds it; else its parent's depth + 1
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


def image_row(image: dict, num_masks: int = 0, seconds: float | None = None, error: str | None = None) -> dict:
    """The one builder of an IMAGE_SCHEMA row: the image's id, file name and size (None where it could not be
    read), status "ok", or "failed" with the `error` that says why, its mask count and seconds spent."""
    return {
        "image_id": image["image_id"],
        "file_name": image["file_name"],
        "height": image.get("height"),
        "width": image.get("width"),
        "status": "ok" if error is None else "failed",
        "error": error,
        "num_masks": num_masks,
        "seconds": seconds,
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
    write_atomic(table(with_hierarchy(with_mask_ids(masks)), MASK_SCHEMA), shard_path(out_dir, "masks", shard_id))
    write_atomic(table(images, IMAGE_SCHEMA), shard_path(out_dir, "images", shard_id))


def read_masks(dataset: str | Path, columns=None, filter=None) -> pa.Table:
    return read_part(dataset, "masks", MASK_SCHEMA, columns, filter)


def read_images(dataset: str | Path, columns=None, filter=None) -> pa.Table:
    return read_part(dataset, "images", IMAGE_SCHEMA, columns, filter)


def read_part(dataset, part: str, schema: pa.Schema, columns=None, filter=None) -> pa.Table:
    """The rows of a part (masks, images) that pass `filter` (a pyarrow.compute expression), read shard by
    shard: only the matching rows of the asked columns are held."""
    return scan_part(dataset, part, schema).to_table(columns=columns, filter=filter)


def scan_part(dataset, part: str, schema: pa.Schema) -> pads.Dataset:
    """A part's shard files as one pyarrow dataset; nothing is read until it is scanned."""
    return pads.dataset([str(p) for p in shard_files(dataset, part)], schema=schema, format="parquet")


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


# ----------------------------------------------------------------------------------------------
# A dataset folder read back
# ----------------------------------------------------------------------------------------------

IMPORT_FIRST = (
    "a COCO file goes through stage 1's importer first: data-engine stage=assisted assisted.format=coco "
    "assisted.annotations=FILE.json input.path=IMAGES output.dir=OUT, then open OUT"
)
AUDIT_COLUMNS = ["pred_mask_id", "expert_mask_id", "expert_image_id", "iou", "boundary_iou", "expert_area", "size"]


class DatasetError(UserError, ValueError):
    """A folder that is not a dataset, or a part of one that cannot be read; the message says what to do."""


class Dataset:
    """A data-engine output folder (auto, semi, semi_merge, assisted, synth, ...) read back: the one place
    that knows its layout.

    masks/ and images/ hold Parquet shards (MASK_SCHEMA, IMAGE_SCHEMA) in folders of SHARDS_PER_FOLDER;
    run.json the resolved config and where the images were read from. Tables are read shard by shard,
    keeping only the rows a filter passes, so a filter over an 11M-image dataset holds only its result.

        ds = Dataset.open("out/auto")
        good = ds.masks(filter=pc.field("predicted_iou") > 0.9)   # pyarrow.Table; as_pandas=True: pandas
        picture, mask = ds.image(image_id), ds.decode(good.to_pylist()[0])
    """

    def __init__(self, path: Path, record: dict, image_root: Path | None):
        self.path, self.record, self.image_root = path, record, image_root

    @classmethod
    def open(
        cls,
        path: str | Path,
        key: str = "Dataset.open",
        what_to_do: str = RERUN,
        fingerprint: bool = False,
        image_root: str | Path | None = None,
        needs: tuple[str, ...] = (),
    ) -> Dataset:
        """The dataset in folder `path`. `key` names the setting that gave it in errors; with `fingerprint`
        its run.json must exist and carry one (read_run_record); `needs` names parts (masks, images) it must
        hold. `image_root` overrides where its images are found (else run.json's input_root, the stage's
        image_root, or the folder's pictures/)."""
        folder = Path(path).expanduser()
        if not any((folder / name).exists() for name in ("masks", "images", "run.json")):
            raise DatasetError(not_a_dataset(folder, key))
        missing = [f"{part}/" for part in needs if not (folder / part).is_dir()]
        if missing:
            raise DatasetError(
                f"{key}: {folder} has no {' or '.join(missing)} folder; give the output.dir of a data-engine run "
                "that writes masks (auto, semi, assisted, synth)"
            )
        record = read_run_record(folder, key, what_to_do, missing_ok=not fingerprint, fingerprint=fingerprint)
        root = Path(image_root).expanduser() if image_root else find_image_root(folder, record)
        return cls(folder, record, root)

    @property
    def run(self) -> dict:
        """The resolved config the stage ran with ({} for a folder without run.json)."""
        return self.record.get("config", {})

    def images(self, filter=None, columns=None, as_pandas: bool = False):
        """One row per input file (IMAGE_SCHEMA): image_id, file_name, height, width, status, error, ...
        `filter`: a pyarrow.compute expression, e.g. pc.field("status") == "ok"."""
        tbl = read_images(self.path, columns, filter)
        return tbl.to_pandas() if as_pandas else tbl

    def masks(self, filter=None, columns=None, as_pandas: bool = False):
        """One row per mask (MASK_SCHEMA): mask_id, image_id, file_name, segmentation (COCO RLE counts),
        area, bbox, scores, provenance. `filter`: a pyarrow.compute expression on any column."""
        tbl = read_masks(self.path, columns, filter)
        return tbl.to_pandas() if as_pandas else tbl

    def by_image(self, filter=None, columns=None) -> tuple[list[dict], dict[str, list[dict]]]:
        """(the ok images, sorted by file name; {file_name: their mask rows that pass `filter`, in dataset
        order}): what a writer of per-image files needs. An image known only from masks/ (some importers
        list no image row) is taken from its first mask row."""
        by_name = {r["file_name"]: r for r in self.images(pc.field("status") == "ok").to_pylist()}
        masks: dict[str, list[dict]] = {}
        for row in self.masks(filter, columns).to_pylist():
            masks.setdefault(row["file_name"], []).append(row)
            by_name.setdefault(row["file_name"], row)
        images = [{k: by_name[n][k] for k in ("image_id", "file_name", "height", "width")} for n in sorted(by_name)]
        return images, masks

    def scan(self, part: str = "masks") -> pads.Dataset:
        """masks/ or images/ as a pyarrow dataset, for streaming (to_batches) or counting without reading."""
        return scan_part(self.path, part, part_schema(part, "Dataset.scan"))

    def shard_ids(self) -> list[str]:
        """The ids of the shards written whole (their images/ file is written last), in shard order."""
        return [p.stem for p in shard_files(self.path, "images")]

    def shard(self, shard_id: str, part: str = "images", columns=None) -> pa.Table:
        """One shard's rows of masks/ or images/, for a stage that redoes another run shard by shard."""
        schema = part_schema(part, "Dataset.shard")
        return pq.read_table(shard_path(self.path, part, shard_id), columns=columns, schema=schema)

    def image(self, image_id: int) -> np.ndarray:
        """[H, W, 3] uint8 RGB of one image, read from image_root as the stage read it: only a regular file,
        and a symlink out of image_root only if the run followed symlinks (input.follow_symlinks)."""
        # The image's file name, from images/ (or masks/, where an importer listed no image row)
        wanted = pc.field("image_id") == image_id
        found = self.images(wanted, ["file_name"])
        found = found if found.num_rows else self.masks(wanted, ["file_name"])
        if not found.num_rows:
            raise DatasetError(f"image_id {image_id} is not an image of {self.path}")
        if self.image_root is None:
            raise DatasetError(f"cannot tell where the images of {self.path} are; open it with image_root=FOLDER")
        # Read it as the stage did
        name, settings = found["file_name"][0].as_py(), self.run.get("input", {})
        path = inputs.resolve(self.image_root, name)
        follows = Path(name).is_absolute() or settings.get("follow_symlinks")
        if not follows and inputs.leaves_root(path, self.image_root):
            raise DatasetError(f"{name} leads out of {self.image_root}, and the run did not follow symlinks")
        inputs.check_regular(path)
        return load_rgb(path, settings.get("max_pixels") or 1 << 62)

    @staticmethod
    def decode(mask: dict) -> np.ndarray:
        """A mask row (a dict, or a pandas row) -> its [H, W] bool mask."""
        return rle.decode(mask["segmentation"], int(mask["height"]), int(mask["width"]))

    def to_coco(self, path: str | Path, filter=None) -> Path:
        """A COCO instances file of the ok images and their masks (those `filter` passes), as
        `stage=export export.format=coco` writes it: RLE segmentations, ids the dataset's image_id and
        mask_id, score = predicted_iou."""
        images, masks = self.by_image(filter)
        entries = [coco.image_entry(img, img["image_id"]) for img in images]
        annotations = [coco.dataset_annotation(row) for img in images for row in masks.get(img["file_name"], [])]
        coco.write(path, entries, annotations)
        return Path(path)

    def join_audit(self, audit_dir: str | Path, columns=None, as_pandas: bool = False):
        """Each mask (of `columns`) with its row of a stage=audit run's pairs.parquet, joined on mask_id =
        pred_mask_id: expert_mask_id, expert_image_id, iou, boundary_iou, expert_area, size (null where no
        expert mask matched). The audit must have had this dataset as audit.pred."""
        pairs = audit_pairs(Path(audit_dir).expanduser(), self.path)
        masks = self.masks(columns=columns if columns is None or "mask_id" in columns else ["mask_id", *columns])
        # Each mask's pair row (null where it has none), in the masks' order
        taken = pairs.take(pc.index_in(masks["mask_id"], value_set=pairs["pred_mask_id"]))
        for name in AUDIT_COLUMNS[1:]:
            masks = masks.append_column(name, taken[name])
        return masks.to_pandas() if as_pandas else masks


def part_schema(part: str, key: str) -> pa.Schema:
    """The schema of a dataset's part (masks or images); `key` names the caller in the refusal."""
    schemas = {"masks": MASK_SCHEMA, "images": IMAGE_SCHEMA}
    if part not in schemas:
        raise DatasetError(f"{key}: part {part!r} is not one of {sorted(schemas)}")
    return schemas[part]


def find_image_root(folder: Path, record: dict) -> Path | None:
    """Where a dataset's images are: the first existing of run.json's input_root, the image_root setting of
    the stage that wrote it (assisted, semi_merge) and the folder's pictures/ (synth); None when none is."""
    config = record.get("config", {})
    stage = config.get("stage")
    section = config.get(stage.get("name")) if isinstance(stage, dict) else None
    candidates = [
        record.get("input_root"),
        section.get("image_root") if isinstance(section, dict) else None,
        folder / "pictures",
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), None)


def not_a_dataset(folder: Path, key: str) -> str:
    """What is wrong with a path that is not a dataset folder, and what to do."""
    what = "is not a dataset folder (no masks/, images/ or run.json)" if folder.is_dir() else "is no folder"
    if folder.suffix.lower() == ".json" or (folder / "annotations.json").is_file():
        return f"{key}: {folder} {what}; {IMPORT_FIRST}"
    return f"{key}: {folder} {what}; give the output.dir of a stage that writes masks (auto, semi, assisted, synth)"


def audit_pairs(audit_dir: Path, dataset: Path) -> pa.Table:
    """The pairs of generated masks of an audit of `dataset` (AUDIT_COLUMNS)."""
    pairs = audit_dir / "pairs.parquet"
    if not pairs.is_file():
        raise DatasetError(f"{audit_dir} has no pairs.parquet: give the output.dir of a stage=audit run")
    metrics = read_json(audit_dir / "metrics.json", "audit metrics") if (audit_dir / "metrics.json").is_file() else {}
    audited = metrics.get("settings", {}).get("pred") if isinstance(metrics, dict) else None
    if audited and Path(audited).exists() and not Path(audited).samefile(dataset):
        raise DatasetError(f"{audit_dir} audited {audited}, not {dataset}: join the dataset it audited")
    return pq.read_table(pairs, columns=AUDIT_COLUMNS).filter(pc.is_valid(pc.field("pred_mask_id")))
