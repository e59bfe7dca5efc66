"""The driver's cost at scale, and a GPU worker's host side, measured with stubs (no model).

    python benchmarks/scale.py --sizes 10000,100000,1000000 --workers 1,2 --host-side

Planning and resume: for each size N, a manifest table of N entries (path, size, mtime)
and an output folder whose shards are 90% done (_done records, masks/ and images/ files in the nested
layout) are written as the fixture, untimed. A fresh process per size then times what run_job does on the
driver: plan (read the manifest, make_shards with the manifest's stamps: no input file is stat'ed), resume
(prepare_output, read_ledger, pending, drop_stale_shards) and summary (summarize from the ledger), and
reports its peak resident memory. Each figure's growth law is the fit time = a * N^b over the sizes; the
11M row is that fit extrapolated.

Throughput: executor.run_shards on shards of a stub worker that does no model work and returns its stats
at once (`stub`), or writes each shard's image rows, masks/ file and _done record (`write`): runtime=serial,
and runtime=local (Ray Data) with N workers. The rate is the marginal one between two image counts, so Ray's
start and the actor pool's start are left out.

Host side (--host-side): real 1500x2250 JPEGs, and a stub generator whose output is SA-1B-like (about
100 masks per image, irregular polygons, RLE in the generator's format). Timed in CPU seconds per image: JPEG
decode, the generator's host steps (RLE from a GPU's run ends, area and box, small-region clean-up), and the
worker around the model (AutoWorker with the stub: decode ahead, mask rows, background Parquet write).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_engine.io import inputs  # noqa: E402
from data_engine.io.dataset import shard_path  # noqa: E402
from data_engine.runtime import runs  # noqa: E402

CONFIG = {"stage": "auto", "input": {"shard_size": 256}, "output": {"dir": "out"}}  # stands in for a run's config


# Planning and resume


def write_fixture(folder: Path, n: int, shard_size: int, done_share: float = 0.9) -> Path:
    """A manifest of n entries and an output folder with done_share of its shards finished; returns the output."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(n)
    names = [f"{i // 1000:06d}/img_{i:09d}.jpg" for i in range(n)]
    sizes = rng.integers(200_000, 900_000, n)
    mtimes = 1_700_000_000_000_000_000 + rng.integers(0, 10**15, n)
    manifest = folder / "manifest.parquet"
    pq.write_table(pa.table({"path": names, "size": sizes, "mtime": mtimes}), manifest)
    listing = inputs.list_inputs(manifest)
    shards = inputs.make_shards(listing.names, shard_size, listing.root, listing.stamps)
    out = folder / "out"
    runs.prepare_output(out, CONFIG, {"input_root": str(listing.root)})
    for shard in shards[: int(len(shards) * done_share)]:
        images = len(shard["files"])
        record = {
            "images": images,
            "masks": 100 * images,
            "seconds": 40.0,
            "failed": 0,
            "bytes": 30_000_000,
            "worker": {"host": "node-0001", "pid": 12345, "device": "cuda:0"},
            "inputs": shard["inputs"],
            "model_seconds": 36.0,
            "busy_seconds": 39.0,
        }
        for part in ("masks", "images"):
            path = shard_path(out, part, shard["shard_id"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        path = runs.done_path(out, shard["shard_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
    return out


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_driver(folder: Path, shard_size: int) -> dict:
    """In a fresh process: the driver's plan, resume and summary of the fixture in `folder`."""
    import pyarrow.csv  # noqa: F401  (imported by every run: not part of the plan's memory or time)
    import pyarrow.parquet  # noqa: F401

    base = rss_mib()
    start = time.perf_counter()
    listing = inputs.list_inputs(folder / "manifest.parquet")
    shards = inputs.make_shards(listing.names, shard_size, listing.root, listing.stamps)
    planned = time.perf_counter()
    out = folder / "out"
    runs.prepare_output(out, CONFIG, {"input_root": str(listing.root)})
    ledger = runs.read_ledger(out)
    todo = runs.pending(shards, ledger)
    ledger = runs.drop_stale_shards(out, shards, todo, ledger)
    resumed = time.perf_counter()
    summary = runs.summarize(shards, ledger, {})
    summarized = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "images": len(listing.names),
        "shards": len(shards),
        "todo": len(todo),
        "done": len(ledger),
        "unfinished": len(summary["shards_failed"]),
        "plan_s": planned - start,
        "resume_s": resumed - planned,
        "summary_s": summarized - resumed,
        "peak_mib": peak,
        "base_mib": base,
    }


def driver_figures(sizes: list[int], shard_size: int, work: Path) -> list[dict]:
    rows = []
    for n in sizes:
        folder = work / f"plan-{n}"
        if not (folder / "out" / "run.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            write_fixture(folder, n, shard_size)
        child = subprocess.run(
            [sys.executable, __file__, "--measure-driver", str(folder), "--shard-size", str(shard_size)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(child.stdout.strip().splitlines()[-1])
        assert row["images"] == n and row["todo"] == row["shards"] - row["done"], row
        rows.append(row)
    return rows


def growth(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of y = a * x^b, least squares in log-log (b = 1 with a single point)."""
    lx, ly = np.log(xs), np.log(np.maximum(ys, 1e-9))
    b = float(np.polyfit(lx, ly, 1)[0]) if len(xs) > 1 else 1.0
    return float(np.exp(np.mean(ly - b * lx))), b


def print_driver(rows: list[dict], target: int) -> None:
    print("\n## Driver: plan, resume (90% of shards done), summary; peak memory of a fresh process per size")
    print(f"{'images':>12} {'shards':>8} {'plan s':>8} {'resume s':>9} {'summary s':>10} {'peak MiB':>9} {'+MiB':>8}")
    for r in rows:
        print(
            f"{r['images']:>12,} {r['shards']:>8,} {r['plan_s']:>8.2f} {r['resume_s']:>9.2f} {r['summary_s']:>10.3f} "
            f"{r['peak_mib']:>9.0f} {r['peak_mib'] - r['base_mib']:>8.0f}"
        )
    xs, keys = [r["images"] for r in rows], ("plan_s", "resume_s", "summary_s", "grown_mib")
    ys = {k: [r[k] if k != "grown_mib" else r["peak_mib"] - r["base_mib"] for r in rows] for k in keys}
    laws = {k: growth(xs, ys[k])[1] for k in keys}
    print("growth law y = a * N^b over all sizes: " + ", ".join(f"{k} b={b:.2f}" for k, b in laws.items()))
    # From the largest size: linear at the marginal cost per entry between the two largest sizes (fixed
    # costs bend a fit over small sizes below the growth that holds at scale), or the power law between
    # them where that grows faster than linearly
    tail = {k: growth(xs[-2:], ys[k][-2:])[1] for k in keys}
    ext = {
        k: ys[k][-1] * (target / xs[-1]) ** tail[k]
        if tail[k] > 1.1 or len(xs) < 2
        else ys[k][-1] + (ys[k][-1] - ys[k][-2]) / (xs[-1] - xs[-2]) * (target - xs[-1])
        for k in keys
    }
    base = rows[-1]["base_mib"]
    shards = math.ceil(target / (rows[-1]["images"] / rows[-1]["shards"]))
    print(
        f"{target:>12,} {shards:>8,} {ext['plan_s']:>8.1f} {ext['resume_s']:>9.1f} {ext['summary_s']:>10.3f} "
        f"{base + ext['grown_mib']:>9.0f} {ext['grown_mib']:>8.0f}  <- EXTRAPOLATED from {xs[-1]:,}, not measured "
        "(linear at the marginal cost of the two largest sizes, or their power law where b > 1.1)"
    )


# Throughput of the executor


class StubWorker:
    """A worker without a model: returns a shard's stats at once, or first writes its image rows (`out`)."""

    def __init__(self, out: str | None = None):
        self.out = Path(out) if out else None

    def __call__(self, shard: dict, on_image=lambda *event: None) -> dict:
        start, files = time.time(), shard["files"]
        if self.out is None:
            return {"images": len(files), "masks": 3 * len(files), "failed": 0}
        rows = [
            ({"image_id": inputs.image_id(f), "file_name": f, "height": 1500, "width": 2250, "status": "ok"}, [])
            for f in files
        ]
        return runs.complete_shard(self.out, shard["shard_id"], rows, start)


def run_rate(n_images: int, shard_size: int, runtime: dict, out: Path | None) -> float:
    names = [f"{i // 1000:06d}/img_{i:09d}.jpg" for i in range(n_images)]
    shards = inputs.make_shards(names, shard_size)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    from data_engine.runtime.executor import run_shards

    start = time.perf_counter()
    done, failed = run_shards(shards, partial(StubWorker, None if out is None else str(out)), runtime)
    seconds = time.perf_counter() - start
    assert not failed and len(done) == len(shards), failed
    return seconds


def throughput(counts: list[int], shard_size: int, workers: list[int], kinds: list[str], work: Path) -> list[dict]:
    rows = []
    configs = [("serial", None)] + [("local", n) for n in workers]
    for name, n in configs:
        runtime = {"name": name, "progress": False}
        if name == "local":
            from data_engine.runtime.executor import init_ray

            runtime.update(
                num_workers=n,
                cpus_per_worker=1,
                gpus_per_worker=1,
                max_retries=0,
                shard_timeout_s=None,
                placement_timeout_s=60,
            )
            init_ray(runtime)
        for kind in kinds:
            out = work / "rate-out" if kind == "write" else None
            run_rate(4 * shard_size, shard_size, runtime, out)  # warm: imports, the first actors
            times = [run_rate(c, shard_size, runtime, out) for c in counts]
            marginal = (counts[-1] - counts[0]) / max(times[-1] - times[0], 1e-9) if len(counts) > 1 else None
            rows.append(
                {
                    "runtime": name,
                    "workers": n or 1,
                    "kind": kind,
                    "counts": counts,
                    "times": times,
                    "marginal": marginal,
                }
            )
    return rows


def print_throughput(rows: list[dict], shard_size: int, gpus: int, gpu_rates: list[float]) -> None:
    print(f"\n## Executor throughput with a stub worker (shard_size {shard_size}): images/s of bookkeeping")
    print(
        f"{'runtime':>8} {'workers':>7} {'worker':>6} "
        + " ".join(f"{c:>10,} img" for c in rows[0]["counts"])
        + f" {'marginal img/s':>15} {'shards/s':>9}"
    )
    for r in rows:
        cells = " ".join(f"{c / t:>10,.0f}/s" for c, t in zip(r["counts"], r["times"]))
        m = r["marginal"]
        tail = f"{m:>15,.0f} {m / shard_size:>9.1f}" if m else f"{'-':>15} {'-':>9}"
        print(f"{r['runtime']:>8} {r['workers']:>7} {r['kind']:>6} {cells} {tail}")
    need = [gpus * rate / shard_size for rate in gpu_rates]
    print(
        f"needed by {gpus} GPUs at {'-'.join(f'{r:g}' for r in gpu_rates)} img/s each: "
        f"{'-'.join(f'{n:.0f}' for n in need)} shards/s = "
        f"{'-'.join(f'{gpus * r:,.0f}' for r in gpu_rates)} img/s (EXTRAPOLATION: no GPU in this run)"
    )


# A GPU worker's host side


def write_jpegs(folder: Path, count: int, height: int, width: int) -> list[str]:
    """Natural-ish photos: gradients, shapes, texture and noise, JPEG quality 90."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        rng = np.random.default_rng(k)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        img = np.stack([(x / width * 200 + 30 * c + 40 * np.sin(y / (50 + 20 * c))) for c in range(3)], -1)
        for _ in range(40):
            color = [int(v) for v in rng.integers(0, 255, 3)]
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(20, 400)), int(rng.integers(20, 400)))
            cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        img += rng.normal(0, 12, img.shape).astype(np.float32)
        img = cv2.GaussianBlur(img, (3, 3), 0) + rng.normal(0, 4, img.shape).astype(np.float32)
        name = f"photo_{k:03d}.jpg"
        cv2.imwrite(str(folder / name), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        names.append(name)
    return names


def stub_output(seed: int, n_masks: int, height: int, width: int, specks: bool = False) -> dict:
    """SA-1B-like generator columns: smooth irregular blobs of log-uniform size, RLE in COCO's compressed form.
    With `specks`, each mask also has a speck of about 30 px beside it: an island the clean-up removes."""
    from pycocotools import mask as mask_utils

    from data_engine.io import rle

    rng = np.random.default_rng(seed)
    counts, angles = [], np.linspace(0, 2 * np.pi, 97)[:-1]
    for _ in range(n_masks):
        radius = float(np.exp(rng.uniform(np.log(8), np.log(min(height, width) / 3))))
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        wobble = sum(rng.uniform(0, 0.25 / k) * np.cos(k * angles + rng.uniform(0, 6.3)) for k in range(1, 7))
        r = radius * (1 + wobble) * rng.uniform(0.5, 1.0)
        polygons = [np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel().tolist()]
        if specks:
            sx, sy = min(cx + 1.5 * r.max() + 10, width - 8), cy
            polygons.append([sx, sy, sx + 6, sy, sx + 6, sy + 5, sx, sy + 5])
        counts.append(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))["counts"].decode())
    points = rng.uniform(0, 1, (n_masks, 1, 2)) * [width, height]
    return {
        "segmentation": counts,
        "area": rle.area(counts, height, width).tolist(),
        "bbox": rle.bbox(counts, height, width).tolist(),
        "predicted_iou": rng.uniform(0.88, 1.0, n_masks).tolist(),
        "stability_score": rng.uniform(0.95, 1.0, n_masks).tolist(),
        "point_coords": points.tolist(),
        "crop_box": [[0.0, 0.0, float(width), float(height)]] * n_masks,
    }


class StubGenerator:
    """Stands in for the MaskGenerator: hands out precomputed outputs, one per image, in turn."""

    device = "cuda"

    def __init__(self, outputs: list[dict]):
        self.outputs, self.next = outputs, 0

    def generate(self, image) -> dict:
        self.next += 1
        return self.outputs[(self.next - 1) % len(self.outputs)]

    def generate_batch(self, images) -> list[dict]:
        return [self.generate(image) for image in images]


def cpu_timed(fn, *args):
    """(result, CPU seconds of the whole process, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def run_ends(counts: str, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Positions where a mask's runs end (as a GPU's torch.nonzero gives them) and its first pixel."""
    from data_engine.io import rle

    lengths = rle.parse_counts(counts)
    starts = np.cumsum(lengths)[:-1]
    return starts[starts > 0] - 1, bool(lengths[0] == 0)


def host_side(work: Path, n_images: int, n_masks: int, height: int, width: int, clean_images: int) -> dict:
    import torch

    from data_engine.amg.select import Selection, clean_small_regions
    from data_engine.amg.worker import AutoWorker
    from data_engine.io import rle
    from data_engine.io.images import load_rgb

    torch.set_num_threads(1)
    folder = work / "photos"
    names = write_jpegs(folder, n_images, height, width)
    outputs = [stub_output(k, n_masks, height, width) for k in range(n_images)]
    per, masks = {}, sum(len(o["segmentation"]) for o in outputs)

    _, cpu, _ = cpu_timed(lambda: [load_rgb(folder / n, 10**9) for n in names])
    per["JPEG decode (load_rgb)"] = cpu / n_images

    # The generator's host steps on a GPU: RLE from the run ends the GPU found, area and box from the RLE
    ends = [[run_ends(c, height, width) for c in o["segmentation"]] for o in outputs]
    changes = [
        (
            np.concatenate([np.stack([np.full(len(e), i), e], 1) for i, (e, _) in enumerate(mine)]),
            np.array([f for _, f in mine]),
        )
        for mine in ends
    ]
    got, cpu, _ = cpu_timed(lambda: [rle.counts_from_changes(c, f, height, width) for c, f in changes])
    assert got == [o["segmentation"] for o in outputs], "run ends do not give the stub's RLE back"
    per["RLE from a GPU's run ends"] = cpu / n_images
    _, cpu, _ = cpu_timed(
        lambda: [
            (rle.area(o["segmentation"], height, width), rle.bbox(o["segmentation"], height, width)) for o in outputs
        ]
    )
    per["area and box from RLE"] = cpu / n_images

    # Small-region clean-up (amg.min_mask_region_area, 100 in the SA-1B recipe): the generator's own code
    settings = Selection(min_mask_region_area=100, keep_largest_small_region=False, box_nms_thresh=0.7)

    def cleanup(o):
        n = len(o["segmentation"])
        data = {
            "rles": list(o["segmentation"]),
            "iou_preds": torch.rand(n),
            "points": torch.rand(n, 1, 2),
            "boxes": torch.zeros(n, 4),
            "crop_boxes": torch.zeros(n, 4),
        }
        return clean_small_regions(data, height, width, settings)

    specked = [stub_output(k, n_masks, height, width, specks=True) for k in range(clean_images)]
    cleanups = {}
    for label, batch in (("no mask changed", outputs[:clean_images]), ("every mask changed", specked)):
        kept, cpu, _ = cpu_timed(lambda outs=batch: [cleanup(o) for o in outs])
        # (the clean-up ends with a box NMS: overlapping masks go, the rest are reordered)
        changed = sum(len(set(k["rles"]) - set(o["segmentation"])) for k, o in zip(kept, batch))
        kept = sum(len(k["rles"]) for k in kept)
        assert changed == (0 if label == "no mask changed" else kept), (label, changed, kept)
        cleanups[label] = cpu / clean_images

    # For reference: RLE of dense masks on the CPU (the generator's path without a GPU)
    dense = np.stack([rle.decode(c, height, width) for c in outputs[0]["segmentation"]])
    _, cpu, _ = cpu_timed(rle.encode, dense)
    reference = {"RLE of dense masks on a CPU (not on a GPU's path)": cpu}
    del dense

    # The worker around the model: decode ahead, mask rows, the shard's Parquet write in the background
    out = work / "host-out"
    shutil.rmtree(out, ignore_errors=True)
    worker = AutoWorker.__new__(AutoWorker)
    cfg = {
        "amg": {"images_per_batch": 4},
        "input": {"image_timeout_s": 600, "max_pixels": 10**9},
        "debug": {},
        "output": {"dir": str(out)},
    }
    worker.cfg, worker.root, worker.out_dir, worker.model_name = cfg, folder, out, "vit_h"
    worker.generator = StubGenerator(outputs)
    worker.writer = runs.ShardWriter(out, "cuda")
    shard = {"shard_id": "shard-000000000", "files": names}
    stats, cpu, wall = cpu_timed(lambda: (worker(shard), worker.close())[0])
    assert stats["images"] == n_images and stats["failed"] == 0 and stats["masks"] == masks, stats
    worker_cpu = cpu / n_images

    # Its parts: mask rows, and the shard's Parquet write
    from data_engine.amg.worker import mask_rows

    images = [{"image_id": inputs.image_id(n), "file_name": n, "height": height, "width": width} for n in names]
    rows, cpu, _ = cpu_timed(lambda: [mask_rows(o, im, "vit_h") for o, im in zip(outputs, images)])
    per_part = {"mask rows (mask_rows)": cpu / n_images}
    results = [({**im, "status": "ok", "num_masks": len(r), "seconds": 0.1}, r) for im, r in zip(images, rows)]
    shutil.rmtree(out, ignore_errors=True)
    _, cpu, _ = cpu_timed(runs.complete_shard, out, "shard-000000001", results, time.time())
    per_part["Parquet write (complete_shard)"] = cpu / n_images
    size = shard_path(out, "masks", "shard-000000001").stat().st_size / n_images
    return {
        "images": n_images,
        "masks_per_image": masks / n_images,
        "jpeg_kib": np.mean([(folder / n).stat().st_size for n in names]) / 1024,
        "parquet_kib_per_image": size / 1024,
        "generator": {k: v for k, v in per.items() if k != "JPEG decode (load_rgb)"},
        "cleanup": cleanups,
        "decode": per["JPEG decode (load_rgb)"],
        "worker": worker_cpu,
        "worker_wall": wall / n_images,
        "worker_parts": per_part,
        "reference": reference,
    }


def print_host(h: dict, gpu_rate: float, height: int, width: int) -> None:
    print(
        f"\n## A GPU worker's host side: CPU seconds per {height}x{width} image, {h['masks_per_image']:.0f} masks "
        f"(JPEG {h['jpeg_kib']:.0f} KiB, masks Parquet {h['parquet_kib_per_image']:.0f} KiB per image)"
    )
    print(f"  {'AutoWorker around the stub (decode ahead, rows, write)':<58} {h['worker']:>7.3f} s")
    print(f"    {'of which JPEG decode (load_rgb)':<56} {h['decode']:>7.3f} s")
    for k, v in h["worker_parts"].items():
        print(f"    {'of which ' + k:<56} {v:>7.3f} s")
    for k, v in h["generator"].items():
        print(f"  {'generator host step: ' + k:<58} {v:>7.3f} s")
    for k, v in h["cleanup"].items():
        print(f"  {'generator host step: small-region clean-up, ' + k:<58} {v:>7.3f} s")
    without = h["worker"] + sum(h["generator"].values())
    print(
        f"  {'total host CPU per image without the clean-up':<58} {without:>7.3f} s"
        f"  -> {without * gpu_rate:.2f} cores per GPU at {gpu_rate:g} img/s"
    )
    for k, v in h["cleanup"].items():
        total = without + v
        print(
            f"  {'total with the clean-up, ' + k:<58} {total:>7.3f} s"
            f"  -> {total * gpu_rate:.2f} cores per GPU at {gpu_rate:g} img/s"
        )
    for k, v in h["reference"].items():
        print(f"  (reference: {k}: {v:.3f} s)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000", help="manifest entries, comma-separated")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--workers", default="1,2", help="Ray Data workers to try ('' for serial only)")
    p.add_argument("--rate-images", default="20000,100000", help="images through the executor (two: marginal)")
    p.add_argument("--rate-kinds", default="stub,write", help="stub: stats only; write: also a tiny shard")
    p.add_argument("--host-side", action="store_true", help="also the GPU worker's host side")
    p.add_argument("--host-images", type=int, default=16)
    p.add_argument("--clean-images", type=int, default=4, help="images whose masks go through the clean-up")
    p.add_argument("--masks", type=int, default=100)
    p.add_argument("--extrapolate", type=int, default=11_000_000)
    p.add_argument("--gpus", type=int, default=1000)
    p.add_argument("--work", help="fixture folder (kept; default: a temporary one, removed)")
    p.add_argument("--quick", action="store_true", help="10k entries, serial executor, 4 host images")
    p.add_argument("--measure-driver", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure_driver:
        print(json.dumps(measure_driver(Path(args.measure_driver), args.shard_size)))
        return
    if args.quick:
        args.sizes, args.workers, args.rate_images = "10000", "", "2560,10240"
        args.host_side, args.host_images, args.clean_images = True, 4, 1
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rs"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="scale-"))
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        print(f"# benchmarks/scale.py {' '.join(argv if argv is not None else sys.argv[1:])}")
        print(f"# {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}")
        if sizes:
            print_driver(driver_figures(sizes, args.shard_size, work), args.extrapolate)
        counts = [int(c) for c in args.rate_images.split(",") if c]
        workers = [int(w) for w in args.workers.split(",") if w]
        if counts:
            rows = throughput(counts, args.shard_size, workers, args.rate_kinds.split(","), work)
            print_throughput(rows, args.shard_size, args.gpus, [5, 7])
        if args.host_side:
            h = host_side(work, args.host_images, args.masks, 1500, 2250, args.clean_images)
            print_host(h, 7, 1500, 2250)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        if "ray" in sys.modules:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    main()
