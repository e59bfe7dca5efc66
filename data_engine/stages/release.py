"""The release stage: datasets -> SA-1B-style tar shards and manifest.json; or, with release.verify, a check."""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path

from data_engine.errors import ConfigError
from data_engine.release import plan
from data_engine.release.manifest import manifest, totals
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job

log = logging.getLogger(__name__)


def run(cfg: dict) -> dict:
    """Write (or resume) a release in output.dir; or verify release.verify. Raises ReleaseInvalid on a bad release."""
    r = check(cfg["release"])
    if r["verify"]:
        return verify(r["verify"])
    out_dir = Path(cfg["output"]["dir"])
    shards = plan.plan(r["data"], r["image_root"], r["stages"], r["images_per_tar"])
    if not shards:
        raise plan.ReleaseError(f"release.data={r['data']}: no image with status ok; nothing to release")
    log.info("%d images in %d tars", sum(len(s["files"]) for s in shards), len(shards))
    job = ShardedJob(
        out_dir=out_dir,
        config=release_config(cfg),
        shards=shards,
        make_worker=partial(ReleaseWorker, cfg),
        runtime=cfg["runtime"],
        record={"plan_sha256": plan.digest(shards)},
        parts=(),
        before_run=partial(remove_stale, out_dir, shards),
        summarize=partial(summarize, out_dir),
    )
    return run_job(job)


def check(r: dict) -> dict:
    """release.* keys -> the same section, or ConfigError naming the key."""
    b = r["blur"]
    tests = [
        ("verify", r["verify"] is None or Path(r["verify"]).expanduser().is_dir(), "must be a release folder"),
        (
            "data",
            bool(r["verify"]) or (isinstance(r["data"], list) and bool(r["data"])),
            "give the dataset folders to release, e.g. 'release.data=[out/auto]'",
        ),
        ("stages", isinstance(r["stages"], list) and bool(r["stages"]), "must be a list of stage names, e.g. [auto]"),
        ("shortest_side", is_int(r["shortest_side"]) and r["shortest_side"] > 0, "must be a positive integer"),
        ("images_per_tar", is_int(r["images_per_tar"]) and r["images_per_tar"] > 0, "must be a positive integer"),
        ("jpeg_quality", is_int(r["jpeg_quality"]) and 1 <= r["jpeg_quality"] <= 100, "must be an integer 1-100"),
        ("blur.detector", b["detector"] in ("haar", "none"), "must be haar or none"),
        ("blur.cascades", isinstance(b["cascades"], dict) and bool(b["cascades"]), "must map kinds to cascade files"),
        ("blur.scale_factor", is_number(b["scale_factor"]) and b["scale_factor"] > 1, "must be a number above 1"),
        ("blur.min_neighbors", is_int(b["min_neighbors"]) and b["min_neighbors"] >= 0, "must be an integer >= 0"),
        ("blur.min_size", is_int(b["min_size"]) and b["min_size"] > 0, "must be a positive integer"),
        ("blur.strength", is_number(b["strength"]) and b["strength"] > 0, "must be a positive number"),
        ("blur.pad", is_number(b["pad"]) and b["pad"] >= 0, "must be a number >= 0"),
    ]
    for key, ok, message in tests:
        if not ok:
            value = r.get(key, b.get(key.removeprefix("blur.")))
            raise ConfigError(f"release.{key}={value!r}: {message}")
    for folder in [] if r["verify"] else r["data"]:
        if not Path(str(folder)).expanduser().is_dir():
            raise ConfigError(f"release.data: {folder} is not a folder; give the output.dir of a data-engine stage")
    if not r["verify"]:
        from data_engine.release.blur import PrivacyBlur

        PrivacyBlur(**b)  # a cascade that cannot load fails here, before any worker starts
    return r


def release_config(cfg: dict) -> dict:
    """The settings that decide a release's bytes: run.json records them, and a resume must match them
    (other groups, such as amg or model, may change between runs without touching a written release)."""
    return {
        "stage": cfg["stage"],
        "release": cfg["release"],
        "input": {"max_pixels": cfg["input"]["max_pixels"]},
        "output": cfg["output"],
    }


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ReleaseWorker:
    """Builds the blur detector once; turns a tar shard's images into the tar, its sidecar and done record."""

    def __init__(self, cfg: dict):
        from data_engine.release.blur import PrivacyBlur
        from data_engine.release.writer import MaskSource

        r = cfg["release"]
        self.out_dir = Path(cfg["output"]["dir"])
        self.blur = PrivacyBlur(**r["blur"])
        self.masks = MaskSource(r["stages"])
        self.settings = {
            "shortest_side": r["shortest_side"],
            "jpeg_quality": r["jpeg_quality"],
            "max_pixels": cfg["input"]["max_pixels"],
        }

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        from data_engine.io.atomic import sha256_file
        from data_engine.release.writer import write_tar

        stats = write_tar(shard, self.out_dir, self.masks, self.blur, self.settings, on_image)
        tar = self.out_dir / stats["tar"]
        record = {"file": tar.name, "sha256": sha256_file(tar), "bytes": tar.stat().st_size, **stats}
        record["worker"] = runs.worker_info()
        runs.mark_done(self.out_dir, shard["shard_id"], record)
        return record


STALE = re.compile(r"sa_\d{6}\.(tar|json)")


def remove_stale(out_dir: Path, shards: list[dict], todo: list[dict]) -> None:
    """Tars and sidecars of an earlier plan go, and temporary files of a worker killed mid-tar; the manifest
    goes until every tar of this plan is written."""
    keep = {s["shard_id"] for s in shards}
    for path in [*out_dir.glob("sa_*.tar"), *(out_dir / "blur").glob("sa_*.json")]:
        if STALE.fullmatch(path.name) and path.name.split(".")[0] not in keep:
            path.unlink()
    for path in [*out_dir.glob(".sa_*.tmp.tar"), *(out_dir / "blur").glob(".sa_*.tmp.json")]:
        path.unlink()
    if todo:
        (out_dir / "manifest.json").unlink(missing_ok=True)


def summarize(out_dir: Path, shards: list[dict], ledger: dict, failed: dict) -> dict:
    """Totals over the finished tars (their _done records); manifest.json once every tar is written."""
    from data_engine.io.atomic import write_json_atomic

    records = [ledger[s["shard_id"]] for s in shards if s["shard_id"] in ledger]
    complete = len(records) == len(shards)
    if complete:
        write_json_atomic(manifest(records), out_dir / "manifest.json")
    return {
        "tars": len(shards),
        "shards_failed": failed,
        "manifest": str(out_dir / "manifest.json") if complete else None,
        **totals(records),
    }


def verify(path: str) -> dict:
    """Check a release; a bad one raises ReleaseInvalid (the CLI prints its one line and exits 2)."""
    from data_engine.release.verify import ReleaseInvalid, verify_release

    report = verify_release(Path(path).expanduser())
    if report["problems"]:
        raise ReleaseInvalid(report["verdict"])
    log.info(report["verdict"])
    return report
