"""The export stage: a project dataset written as SA-1B JSON, COCO instances JSON (RLE or polygons) or PNG
label images."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from data_engine.exports.formats import WRITERS, export
from data_engine.schema import setting


@dataclass(frozen=True)
class Export:
    # sa1b | coco | coco_polygons | png (written under output.dir/<format>/)
    format: str = setting("sa1b", choices=tuple(WRITERS))
    # a data-engine output.dir (masks/ and images/)
    dataset: str | None = setting(
        "out/auto",
        required="give the output.dir of a data-engine run, e.g. export.dataset=out/auto",
        exists="dir",
        hint="give the output.dir of a data-engine run, e.g. export.dataset=out/auto",
    )
    # coco_polygons: px an outline may move when simplified (0: the exact pixel outline)
    polygon_tolerance: float = setting(0.5, ge=0)


def run(cfg: dict, settings: Export) -> dict:
    """Export export.dataset in export.format under output.dir/<format>/; returns counts and the path."""
    start = time.time()
    summary = export(
        Path(settings.dataset).expanduser(), cfg["output"]["dir"], settings.format, settings.polygon_tolerance
    )
    return {**summary, "seconds": round(time.time() - start, 2)}
