"""The export stage: a project dataset written as SA-1B JSON, COCO instances JSON or PNG label images."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from data_engine.exports.formats import WRITERS, export
from data_engine.schema import setting


@dataclass(frozen=True)
class Export:
    format: str = setting("sa1b", choices=tuple(WRITERS))  # sa1b | coco | png (written under output.dir/<format>/)
    # a data-engine output.dir (masks/ and images/)
    dataset: str | None = setting(
        "out/auto",
        required="give the output.dir of a data-engine run, e.g. export.dataset=out/auto",
        exists="dir",
        hint="give the output.dir of a data-engine run, e.g. export.dataset=out/auto",
    )


def run(cfg: dict, settings: Export) -> dict:
    """Export export.dataset in export.format under output.dir/<format>/; returns counts and the path."""
    start = time.time()
    summary = export(Path(settings.dataset).expanduser(), cfg["output"]["dir"], settings.format)
    return {**summary, "seconds": round(time.time() - start, 2)}
