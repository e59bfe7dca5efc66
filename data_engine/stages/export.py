"""The export stage: a project dataset written as SA-1B JSON, COCO instances JSON or PNG label images."""

from __future__ import annotations

import time
from pathlib import Path

from data_engine.exports.formats import ExportError, export


def run(cfg: dict) -> dict:
    """Export export.dataset in export.format under output.dir/<format>/; returns counts and the path."""
    start = time.time()
    e = cfg["export"]
    if not e["dataset"] or not Path(e["dataset"]).expanduser().is_dir():
        raise ExportError(
            f"export.dataset={e['dataset']} is not a folder: give the output.dir of a data-engine "
            "run, e.g. export.dataset=out/auto"
        )
    summary = export(Path(e["dataset"]).expanduser(), cfg["output"]["dir"], e["format"])
    return {**summary, "seconds": round(time.time() - start, 2)}
