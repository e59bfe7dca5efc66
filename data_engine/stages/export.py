"""The export stage: a project dataset written as SA-1B JSON, COCO instances JSON or PNG label images."""

from __future__ import annotations

import time
from pathlib import Path

from data_engine.errors import check_choice, require
from data_engine.exports.formats import WRITERS, export


def run(cfg: dict) -> dict:
    """Export export.dataset in export.format under output.dir/<format>/; returns counts and the path."""
    start = time.time()
    e = check(cfg["export"])
    summary = export(Path(e["dataset"]).expanduser(), cfg["output"]["dir"], e["format"])
    return {**summary, "seconds": round(time.time() - start, 2)}


def check(e: dict) -> dict:
    check_choice(e, "export.format", WRITERS)
    require(
        bool(e["dataset"]) and Path(e["dataset"]).expanduser().is_dir(),
        "export.dataset",
        f"{e['dataset']} is not a folder: give the output.dir of a data-engine run, e.g. export.dataset=out/auto",
    )
    return e
