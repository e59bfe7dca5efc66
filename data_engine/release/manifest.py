"""The release's manifest.json (one entry per tar, with its SHA-256 and counts) and the run's totals."""

from __future__ import annotations

import re

TAR_NAME = re.compile(r"sa_\d{6}\.tar")


def manifest(records: list[dict]) -> dict:
    """Shard records (in tar order) -> the manifest: what a user checks a download against."""
    tars = [{k: r[k] for k in ("file", "sha256", "bytes", "images", "masks")} for r in records]
    return {
        "format": "sa1b",
        "tars": tars,
        "images": sum(t["images"] for t in tars),
        "masks": sum(t["masks"] for t in tars),
    }


def totals(records: list[dict]) -> dict:
    """Counts over the finished shards, for the run summary."""
    boxes: dict[str, int] = {}
    for r in records:
        for kind, n in r["boxes"].items():
            boxes[kind] = boxes.get(kind, 0) + n
    failed = [f for r in records for f in r["failed"]]
    summed = ("images", "masks", "masks_dropped_empty", "images_downsampled", "images_without_masks", "images_blurred")
    return {
        **{k: sum(r[k] for r in records) for k in summed},
        "boxes_blurred": sum(boxes.values()),
        "boxes_by_kind": dict(sorted(boxes.items())),
        "images_failed": len(failed),
        "first_failure": failed[0] if failed else None,
    }
