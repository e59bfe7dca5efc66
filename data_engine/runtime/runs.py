"""One output folder per run: the run record, shard completion markers, and the run summary."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from data_engine.errors import UserError
from data_engine.io.atomic import write_text_atomic
from data_engine.io.dataset import RunRecordError, read_run_record, shard_files, shard_path, write_shard
from data_engine.runtime.reasons import reason

log = logging.getLogger(__name__)

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
# Free space a shard needs before its worker has written one (then: twice its largest shard).
SHARD_BYTES = 16 << 20
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# summary.json fields that differ on every run although the output does not (kept from the run that wrote it).
VOLATILE = ("seconds",)
REPLACE = "choose another output.dir, or pass output.overwrite=true to replace it"


class OutputConflict(UserError, RuntimeError):
    """output.dir holds a run made with different settings."""


class OutputFull(UserError, OSError):
    """The disk of output.dir is full (or the user's quota is used up)."""


@contextmanager
def disk_errors(path: Path):
    """A full disk while writing under `path` becomes one line saying what to do."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise OutputFull(
            f"no space left for {path} ({err.strerror}): free space on that disk or choose another output.dir"
        ) from None


def check_free_space(out_dir: Path, need: int) -> None:
    """Refuse to start a shard whose output cannot fit, before its work is done."""
    free = shutil.disk_usage(out_dir if out_dir.exists() else out_dir.parent).free
    if free < need:
        raise OutputFull(
            f"only {free / 2**20:.1f} MiB free on the disk of {out_dir}, a shard needs about {need / 2**20:.1f} MiB: "
            "free space on that disk or choose another output.dir"
        )


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


def prepare_output(out_dir: Path, cfg: dict, extra: dict, info: dict | None = None) -> dict:
    """Create or resume `out_dir`; refuse (or with output.overwrite wipe) a run of other settings.
    `extra` is fingerprinted with the config; `info` is only recorded (e.g. the input count: which files
    changed is checked shard by shard, see `pending`)."""
    record = {"fingerprint": fingerprint(cfg, extra), "config": cfg, "versions": versions(), **extra, **(info or {})}
    existing = out_dir / "run.json"
    overwrite = cfg.get("output", {}).get("overwrite")
    if existing.exists() and recorded_fingerprint(out_dir, overwrite) != record["fingerprint"]:
        if not overwrite:
            raise OutputConflict(f"{out_dir} holds a run made with different settings (see its run.json); {REPLACE}")
        clear(out_dir)
    with disk_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_record(existing, record)
    return record


def write_record(path: Path, record: dict, volatile: tuple[str, ...] = ()) -> None:
    """Write `record` to `path` as JSON unless the file already holds it, but for its `volatile` fields
    (e.g. `seconds`): a rerun with nothing to do leaves a finished output folder byte for byte."""
    if not same_record(path, record, volatile):
        write_text_atomic(json.dumps(record, indent=2, default=str), path)


def same_record(path: Path, record: dict, volatile: tuple[str, ...]) -> bool:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    new = json.loads(json.dumps(record, default=str))  # as the file would hold it (tuples as lists, ...)
    return isinstance(old, dict) and drop(old, volatile) == drop(new, volatile)


def drop(record: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


def recorded_fingerprint(out_dir: Path, overwrite: bool) -> str | None:
    """The fingerprint in out_dir's run.json; a damaged run.json is one line (None when overwrite replaces it)."""
    try:
        return read_run_record(out_dir, "output.dir", REPLACE, fingerprint=True)["fingerprint"]
    except RunRecordError:
        if overwrite:
            return None
        raise


def clear(out_dir: Path) -> None:
    for name in ("masks", "images", "candidates", "_done", "_debug", "overlays", "run.json", "summary.json"):
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def done_path(out_dir: Path, shard_id: str) -> Path:
    return shard_path(out_dir, "_done", shard_id, ".json")


def mark_done(out_dir: Path, shard_id: str, stats: dict) -> None:
    """Written after the shard's data files: its presence means the shard is complete."""
    write_text_atomic(json.dumps(stats, indent=2), done_path(out_dir, shard_id))


def read_ledger(out_dir: Path) -> dict[str, dict]:
    """{shard_id: its _done record} of every finished shard: the one read of the ledger a run makes."""
    ledger = {}
    for path in shard_files(out_dir, "_done", ".json"):
        try:
            ledger[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):  # a damaged record: the shard is redone
            log.warning("%s cannot be read; its shard is redone", path)
    return ledger


def complete_shard(
    out_dir: Path,
    shard_id: str,
    results: list[tuple[dict, list[dict]]],
    start: float,
    device=None,
    extra: dict | None = None,
) -> dict:
    """Write a shard's (image row, mask rows) results, mark it done with where it ran (`device`: the
    model's, None without a model) and `extra` (e.g. its inputs digest, timings), and return its stats."""
    images = [image for image, _ in results]
    masks = [mask for _, rows in results for mask in rows]
    with disk_errors(out_dir):
        write_shard(out_dir, shard_id, masks, images)
        stats = {
            "images": len(images),
            "masks": len(masks),
            "seconds": round(time.time() - start, 3),
            "failed": sum(r["status"] == "failed" for r in images),
            "bytes": sum(shard_path(out_dir, part, shard_id).stat().st_size for part in ("masks", "images")),
            "worker": worker_info(device),
            **(extra or {}),
        }
        mark_done(out_dir, shard_id, stats)
    return stats


class ShardWriter:
    """Writes finished shards (complete_shard) in a background thread, one at a time, so the next shard's
    compute overlaps the write. A failed write is kept; close() waits for the last one and returns the
    failures as {shard_id: reason}."""

    def __init__(self, out_dir: Path, device=None):
        self.out_dir, self.device = Path(out_dir), device
        self.thread, self.failures, self.largest, self.written = None, {}, 0, []

    def submit(self, shard_id: str, results: list, start: float, extra: dict) -> None:
        self.wait()
        args = (shard_id, results, start, extra)
        self.thread = threading.Thread(target=self.write, args=args, name=f"write-{shard_id}")
        self.thread.start()

    def write(self, shard_id: str, results: list, start: float, extra: dict) -> None:
        try:
            stats = complete_shard(self.out_dir, shard_id, results, start, self.device, extra)
            self.largest = max(self.largest, stats["bytes"])
            self.written.append(shard_id)
        except Exception as err:  # the shard boundary, reported by close()
            self.failures[shard_id] = reason(err)
            log.error("shard %s could not be written: %s", shard_id, self.failures[shard_id])

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def check_space(self) -> None:
        """Enough free space for the next shard: twice the largest written so far, SHARD_BYTES before any."""
        check_free_space(self.out_dir, 2 * self.largest if self.largest else SHARD_BYTES)

    def settled(self) -> dict:
        """Shards whose write ended since the last call: {"written": [ids], "write_failed": {id: reason}}."""
        written, failed = self.written, self.failures
        self.written, self.failures = [], {}
        return {"written": written, "write_failed": failed}

    def close(self) -> dict:
        """Wait for the last write; {shard_id: reason} of writes that failed and were not yet reported."""
        self.wait()
        return self.settled()["write_failed"]


def worker_info(device=None) -> dict:
    """Where a shard ran, for its _done record: host, process, and the model's device (None: no model)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "device": None if device is None else str(device)}


def pending(shards: list[dict], ledger: dict[str, dict]) -> list[dict]:
    """Shards to run: not done, or done from input files that have changed since (a shard's `inputs`
    digest differs from the one its _done record holds)."""
    return [s for s in shards if not is_done(ledger.get(s["shard_id"]), s)]


def is_done(record: dict | None, shard: dict) -> bool:
    if record is None or "inputs" not in shard:
        return record is not None
    return record.get("inputs") == shard["inputs"]


def drop_stale_shards(out_dir: Path, shards: list[dict], todo: list[dict], ledger: dict, parts=("masks", "images")):
    """Before a run: the files and _done records of shards about to be redone, and of shards no longer in
    the plan (their input files are gone or renamed), are removed, so no row of an old input stays in the
    dataset. Returns the ledger without them."""
    planned = {s["shard_id"] for s in shards}
    redo = {s["shard_id"] for s in todo if s["shard_id"] in ledger}
    found = [p for part in parts for p in shard_files(out_dir, part)] + shard_files(out_dir, "_done", ".json")
    gone = {p.stem for p in found} - planned
    if redo:
        log.warning("%d shards are redone: their input files changed since the last run", len(redo))
    if gone:
        log.warning("%d shards of input files no longer listed are removed", len(gone))
    for shard_id in redo | gone:
        for part in parts:
            shard_path(out_dir, part, shard_id).unlink(missing_ok=True)
        done_path(out_dir, shard_id).unlink(missing_ok=True)
    return {k: v for k, v in ledger.items() if k not in redo | gone}


def summarize(shards: list[dict], records: dict[str, dict], failed_shards: dict) -> dict:
    """Totals from the shards' _done records (no data file is read) plus shards that did not finish (also
    those that ended without a record and without a reported failure: a worker killed while writing)."""
    unfinished = {
        s["shard_id"]: "not written: its worker stopped before the shard's _done record; rerun to redo it"
        for s in shards
        if s["shard_id"] not in records
    }
    done = [records[s["shard_id"]] for s in shards if s["shard_id"] in records]
    images, failed = sum(r.get("images", 0) for r in done), sum(r.get("failed", 0) for r in done)
    model, busy = sum(r.get("model_seconds", 0.0) for r in done), sum(r.get("busy_seconds", 0.0) for r in done)
    return {
        "shards": len(shards),
        "shards_failed": {**unfinished, **failed_shards},
        "images": images,
        "images_ok": images - failed,
        "images_failed": failed,
        "masks": sum(r.get("masks", 0) for r in done),
        **({"model_share": round(model / busy, 3)} if busy > 0 else {}),
    }


def write_summary(out_dir: Path, summary: dict) -> dict:
    """summary.json, left as it is when only its volatile fields (seconds) would change."""
    with disk_errors(out_dir):
        write_record(out_dir / "summary.json", summary, VOLATILE)
    return summary
