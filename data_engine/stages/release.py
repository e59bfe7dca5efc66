"""The release stage: datasets -> SA-1B-style tar shards and manifest.json; or, with release.verify, a check."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from data_engine.errors import require
from data_engine.release import plan
from data_engine.release.blur import DETECTORS
from data_engine.release.manifest import manifest, totals
from data_engine.runtime import runs
from data_engine.runtime.job import ShardedJob, run_job
from data_engine.schema import setting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Blur:
    detector: str = setting("haar", choices=DETECTORS)  # haar (OpenCV cascades, shipped in its 4.x wheels) | none
    # {kind: cascade file}: a name inside cv2.data.haarcascades or a path to an XML file
    cascades: dict[str, str] = setting(
        {"face": "haarcascade_frontalface_default.xml", "plate": "haarcascade_russian_plate_number.xml"},
        required="map kinds to cascade files, e.g. {face: haarcascade_frontalface_default.xml}",
    )
    scale_factor: float = setting(1.1, gt=1)
    min_neighbors: int = setting(5, ge=0)
    min_size: int = setting(24, ge=1)  # px at the released size
    strength: float = setting(0.25, gt=0)  # Gaussian sigma as a fraction of the box's shorter side
    pad: float = setting(0.1, ge=0)  # box grown by this fraction of its size on each side


@dataclass(frozen=True)
class Release:
    data: list[str] = setting([])  # dataset folders: output.dir of any stage (masks/ and images/ tables)
    image_root: str | None = setting(None)  # null: each dataset's run.json input_root
    # which stages' masks go in (SA-1B released only automatic masks)
    stages: list[str] = setting(["auto"], required="must be a list of stage names, e.g. [auto]")
    shortest_side: int = setting(1500, ge=1)  # larger images are area-downsampled to this shortest side
    images_per_tar: int = setting(1000, ge=1)  # images per tar shard (the unit of work and resume)
    jpeg_quality: int = setting(90, ge=1, le=100)
    verify: str | None = setting(None, exists="dir", hint="give a release folder")  # check it instead of writing one
    blur: Blur = setting(Blur())

    def check(self) -> None:
        if self.verify:
            return
        require(bool(self.data), "release.data", "give the dataset folders to release, e.g. 'release.data=[out/auto]'")
        for folder in self.data:
            require(
                Path(folder).expanduser().is_dir(),
                "release.data",
                f"{folder} is not a folder; give the output.dir of a data-engine stage",
            )


def run(cfg: dict, settings: Release) -> dict:
    """Write (or resume) a release in output.dir; or verify release.verify. Raises ReleaseInvalid on a bad release."""
    from data_engine.release.blur import PrivacyBlur

    if settings.verify:
        return verify(settings.verify)
    PrivacyBlur(**asdict(settings.blur))  # a cascade that cannot load fails here, before any worker starts
    out_dir = Path(cfg["output"]["dir"])
    shards = plan.plan(settings.data, settings.image_root, settings.stages, settings.images_per_tar)
    if not shards:
        raise plan.ReleaseError(f"release.data={settings.data}: no image with status ok; nothing to release")
    log.info("%d images in %d tars", sum(len(s["files"]) for s in shards), len(shards))
    job = ShardedJob(
        out_dir=out_dir,
        config=release_config(cfg),
        shards=shards,
        make_worker=partial(ReleaseWorker, cfg, settings),
        runtime=cfg["runtime"],
        record={"plan_sha256": plan.digest(shards)},
        parts=(),
        before_run=partial(remove_stale, out_dir, shards),
        summarize=partial(summarize, out_dir),
    )
    return run_job(job)


def release_config(cfg: dict) -> dict:
    """The settings that decide a release's bytes: run.json records them, and a resume must match them
    (other groups, such as amg or model, may change between runs without touching a written release)."""
    return {
        "stage": cfg["stage"],
        "release": cfg["release"],
        "input": {"max_pixels": cfg["input"]["max_pixels"]},
        "output": cfg["output"],
    }


class ReleaseWorker:
    """Builds the blur detector once; turns a tar shard's images into the tar, its sidecar and done record."""

    def __init__(self, cfg: dict, settings: Release):
        from data_engine.release.blur import PrivacyBlur
        from data_engine.release.writer import MaskSource

        self.out_dir = Path(cfg["output"]["dir"])
        self.blur = PrivacyBlur(**asdict(settings.blur))
        self.masks = MaskSource(settings.stages)
        self.settings = {
            "shortest_side": settings.shortest_side,
            "jpeg_quality": settings.jpeg_quality,
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
