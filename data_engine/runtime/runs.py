"""One output folder per run: the run record, shard completion markers, and the run summary."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import time
from importlib import metadata
from pathlib import Path

from data_engine.errors import UserError
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import read_images, write_shard

PACKAGES = (
    "data-engine",
    "torch",
    "torchvision",
    "segment-anything",
    "ray",
    "hydra-core",
    "pycocotools",
    "numpy",
    "opencv-python-headless",
    "pyarrow",
)
# Config sections that do not change what a run writes (so they may differ on resume).
NOT_IN_FINGERPRINT = ("runtime", "log_level", "debug", "hydra")


class OutputConflict(UserError, RuntimeError):
    """output.dir holds a run made with different settings."""


def fingerprint(cfg: dict, extra: dict) -> str:
    """Hash of everything that decides the output: config (less runtime) plus e.g. model checksum, inputs."""
    keep = {k: v for k, v in cfg.items() if k not in NOT_IN_FINGERPRINT}
    keep["output"] = {k: v for k, v in cfg.get("output", {}).items() if k == "dir"}
    return hashlib.sha256(json.dumps([keep, extra], sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def prepare_output(out_dir: Path, cfg: dict, extra: dict) -> dict:
    """Create or resume `out_dir`; refuse (or with output.overwrite wipe) a run of other settings."""
    record = {"fingerprint": fingerprint(cfg, extra), "config": cfg, "versions": versions(), **extra}
    existing = out_dir / "run.json"
    if existing.exists():
        old = json.loads(existing.read_text())
        if old.get("fingerprint") != record["fingerprint"]:
            if not cfg.get("output", {}).get("overwrite"):
                raise OutputConflict(
                    f"{out_dir} holds a run made with different settings (see its run.json); "
                    "choose another output.dir, or pass output.overwrite=true to replace it"
                )
            clear(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(record, indent=2, default=str), existing)
    return record


def clear(out_dir: Path) -> None:
    for name in ("masks", "images", "_done", "_debug", "overlays", "run.json", "summary.json"):
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def done_path(out_dir: Path, shard_id: str) -> Path:
    return out_dir / "_done" / f"{shard_id}.json"


def mark_done(out_dir: Path, shard_id: str, stats: dict) -> None:
    """Written after the shard's data files: its presence means the shard is complete."""
    write_text_atomic(json.dumps(stats, indent=2), done_path(out_dir, shard_id))


def complete_shard(
    out_dir: Path, shard_id: str, results: list[tuple[dict, list[dict]]], start: float, device=None
) -> dict:
    """Write a shard's (image row, mask rows) results, mark it done with where it ran (`device`: the
    model's, None without a model), and return its stats."""
    images = [image for image, _ in results]
    masks = [mask for _, rows in results for mask in rows]
    write_shard(out_dir, shard_id, masks, images)
    stats = {
        "images": len(images),
        "masks": len(masks),
        "seconds": round(time.time() - start, 3),
        "failed": sum(r["status"] == "failed" for r in images),
        "worker": worker_info(device),
    }
    mark_done(out_dir, shard_id, stats)
    return stats


def worker_info(device=None) -> dict:
    """Where a shard ran, for its _done record: host, process, and the model's device (None: no model)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "device": None if device is None else str(device)}


def pending(shards: list[dict], out_dir: Path) -> list[dict]:
    return [s for s in shards if not done_path(out_dir, s["shard_id"]).exists()]


def summarize(out_dir: Path, shards: list[dict], failed_shards: dict, seconds: float) -> dict:
    """Totals from the written images/ tables plus shards that did not finish."""
    images = read_images(out_dir, columns=["status", "num_masks"]).to_pylist()
    ok = [r for r in images if r["status"] == "ok"]
    summary = {
        "output": str(out_dir),
        "shards": len(shards),
        "shards_failed": failed_shards,
        "images": len(images),
        "images_ok": len(ok),
        "images_failed": len(images) - len(ok),
        "masks": sum(r["num_masks"] or 0 for r in ok),
        "seconds": round(seconds, 2),
    }
    write_text_atomic(json.dumps(summary, indent=2), out_dir / "summary.json")
    return summary
