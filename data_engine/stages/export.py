"""The export stage: a project dataset written as SA-1B JSON, COCO instances JSON (RLE or polygons) or PNG
label images."""

from __future__ import annotations

import time
from pathlib import Path

from data_engine.errors import check_choice, check_number, require
from data_engine.exports.formats import WRITERS, export


def run(cfg: dict) -> dict:
    """Export export.dataset in export.format under output.dir/<format>/; returns counts and the path."""
    start = time.time()
    e = check(cfg["export"])
    summary = export(Path(e["dataset"]).expanduser(), cfg["output"]["dir"], e["format"], e["polygon_tolerance"])
    return {**summary, "seconds": round(time.time() - start, 2)}


def check(e: dict) -> dict:
    check_choice(e, "export.format", WRITERS)
    check_number(e, "export.polygon_tolerance", 0)
    require(
        bool(e["dataset"]) and Path(e["dataset"]).expanduser().is_dir(),
        "export.dataset",
        f"{e['dataset']} is not a folder: give the output.dir of a data-engine run, e.g. export.dataset=out/auto",
    )
    return e
