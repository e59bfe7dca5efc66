"""A pilot run's candidates: per image, the masks that passed the candidate floors, the crop-edge and the
area filters, before the thresholds and NMS (MaskGenerator(keep_candidates=True)).

They are stored per shard beside the masks, candidates/NNNNNN/shard-NNNNNNNNN.parquet, one row per
candidate in the generator's order (crop by crop), and the sweep stage selects from them again at other
settings with the generator's own steps (amg/select.py): `select` below. With a verifier
(verifier.checkpoint) each candidate has its verifier_score, scored as it came from the model (before the
clean-up); files written before that column existed read with it null.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from data_engine.amg.select import Selection, select_crop, select_image
from data_engine.errors import UserError
from data_engine.io.dataset import shard_path, write_atomic

PART = "candidates"
SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("crop_index", pa.int16()),  # the crop it came from: its place among the image's crops (image_crops)
        ("segmentation", pa.string()),  # COCO compressed RLE counts, in the full image
        ("box", pa.list_(pa.int32(), 4)),  # XYXY, max inclusive, image px: the box NMS compares
        ("crop_box", pa.list_(pa.float64(), 4)),  # XYWH, as in masks/
        ("predicted_iou", pa.float32()),
        ("stability_score", pa.float32()),
        ("point_coords", pa.list_(pa.list_(pa.float64(), 2))),  # the prompt, image px
        ("verifier_score", pa.float32()),  # the mask verifier's score (verifier.checkpoint); null: not scored
    ]
)
COLUMNS = SCHEMA.names[4:]


def columns(crops: list[dict]) -> dict:
    """The candidates of each crop of one image (image px, with crop_boxes), in crop order -> columns."""
    out = {name: [] for name in COLUMNS}
    for index, data in enumerate(crops):
        n = len(data["rles"])
        if not n:
            continue
        crop = data["crop_boxes"].cpu().numpy().astype(float)
        out["crop_index"] += [index] * n
        out["segmentation"] += list(data["rles"])
        out["box"] += data["boxes"].cpu().tolist()
        out["crop_box"] += np.concatenate([crop[:, :2], crop[:, 2:] - crop[:, :2]], axis=1).tolist()
        out["predicted_iou"] += data["iou_preds"].float().cpu().tolist()
        out["stability_score"] += data["stability"].float().cpu().tolist()
        out["point_coords"] += data["points"].double().cpu().reshape(n, -1, 2).tolist()
    out["verifier_score"] = [None] * len(out["segmentation"])  # set by the worker when there is a verifier
    return out


def scorer_rows(found: dict, height: int, width: int) -> list[dict]:
    """One image's candidate columns -> rows with the fields the verifier reads (features.py), their area
    and bbox from the RLE as the generator's records give them."""
    from data_engine.io import rle

    counts = found["segmentation"]
    if not counts:
        return []
    areas, boxes = rle.area(counts, height, width).tolist(), rle.bbox(counts, height, width).tolist()
    fields = ("predicted_iou", "stability_score", "crop_box")
    return [
        {"segmentation": c, "height": height, "width": width, "area": a, "bbox": b, **{k: found[k][i] for k in fields}}
        for i, (c, a, b) in enumerate(zip(counts, areas, boxes))
    ]


def has_scores(pilot: str | Path, shard_ids: list[str]) -> bool:
    """Whether the candidates files of these shards have the verifier_score column (the pilot's files may
    predate it)."""
    return all("verifier_score" in pq.read_schema(shard_path(pilot, PART, s)).names for s in shard_ids)


def image_table(found: dict, image: dict) -> pa.Table:
    """One image's candidate columns and its fields -> SCHEMA rows."""
    n = len(found["segmentation"])
    fields = {k: [image[k]] * n for k in ("image_id", "file_name", "height", "width")}
    return pa.table({**fields, **found}, schema=SCHEMA)


def write(out_dir: str | Path, shard_id: str, tables: list[pa.Table]) -> None:
    """The shard's candidates file (written before its _done record)."""
    write_atomic(pa.concat_tables([SCHEMA.empty_table(), *tables]), shard_path(out_dir, PART, shard_id))


class CandidatesError(UserError, ValueError):
    """A pilot's candidates file that is missing or cannot be read."""


def read(pilot: str | Path, shard_id: str) -> pa.Table:
    """A pilot shard's candidates, or a CandidatesError naming the file and what to do."""
    path = shard_path(pilot, PART, shard_id)
    try:
        return pq.read_table(path, schema=SCHEMA)
    except (OSError, pa.ArrowException) as err:
        raise CandidatesError(
            f"sweep.pilot: candidates file {path} cannot be read ({type(err).__name__}): it is damaged; "
            "run the pilot again into a new output.dir"
        ) from None


def by_image(table: pa.Table) -> dict[int, dict]:
    """{image_id: its candidates as numpy columns}, rows in stored order."""
    ids = table.column("image_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    starts = np.flatnonzero(np.diff(ids[order], prepend=-1) != 0) if len(ids) else []
    out = {}
    for start, end in zip(starts, [*starts[1:], len(ids)]):
        rows = table.take(pa.array(order[start:end]))
        out[int(ids[order[start]])] = {name: column_values(rows, name) for name in COLUMNS}
    return out


def column_values(rows: pa.Table, name: str):
    """A column as the selection reads it: numbers as numpy arrays, others as lists."""
    column = rows.column(name)
    if name in ("box", "crop_box", "point_coords"):
        return np.array(column.to_pylist(), dtype=np.float64 if name != "box" else np.int64).reshape(len(rows), -1)
    return column.to_numpy() if name != "segmentation" else column.to_pylist()


def select(
    found: dict | None, n_crops: int, height: int, width: int, selection: Selection, verifier_thresh=None
) -> dict:
    """One image's stored candidates (by_image's) -> its masks at settings `selection`: each crop's candidates go
    through select_crop in crop px, as in the generator, then the image's through select_image. With
    verifier_thresh, candidates scored below it are dropped first (with the thresholds, before NMS). When
    the candidates have verifier scores, the masks carry theirs ("verifier")."""
    if found is None or not len(found["segmentation"]):
        return {"rles": []}
    score = found["verifier_score"]
    scored = not np.isnan(score).any()
    passing = True if verifier_thresh is None else score.astype(np.float64) >= verifier_thresh
    parts = []
    for index in np.unique(found["crop_index"]):
        rows = np.flatnonzero((found["crop_index"] == index) & passing)
        if not len(rows):
            continue
        crop = found["crop_box"][rows[0]]
        offset = torch.tensor([crop[0], crop[1], crop[0], crop[1]], dtype=torch.long)
        data = {
            "rles": [found["segmentation"][i] for i in rows],
            "boxes": torch.as_tensor(found["box"][rows]) - offset,  # crop px
            "iou_preds": torch.as_tensor(found["predicted_iou"][rows]),
            "points": torch.as_tensor(found["point_coords"][rows]),  # image px: only carried along
            "stability": torch.as_tensor(found["stability_score"][rows]),
            "crop_boxes": xyxy(found["crop_box"][rows]),
            **({"verifier": torch.as_tensor(score[rows])} if scored else {}),
        }
        kept = select_crop(data, selection)
        parts.append({**kept, "boxes": kept["boxes"] + offset} if len(kept["rles"]) else kept)
    if not parts:
        return {"rles": []}
    return select_image(parts, n_crops, height, width, selection)


def xyxy(xywh: np.ndarray) -> torch.Tensor:
    """[N, 4] XYWH crop boxes (integers stored as floats) -> [N, 4] int64 XYXY."""
    boxes = torch.as_tensor(xywh).long()
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)
