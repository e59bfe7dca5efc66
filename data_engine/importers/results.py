"""What an importer returns: mask rows, one report row per input annotation, and the count to check."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pyarrow as pa

from data_engine.io import dataset, inputs

IMPORTED, REJECTED = "imported", "rejected"


class Results:
    """Mask rows and report rows of one import; `expect` counts the annotations found in the input."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.rows: list[dict] = []
        self.report: list[dict] = []
        self.expected = 0

    def expect(self, n: int) -> None:
        self.expected += n

    def add_mask(
        self,
        file,
        annotation,
        file_name: str,
        height: int,
        width: int,
        counts: str,
        extra: dict,
        notes=(),
        source: str = "human",
    ) -> None:
        """Import one mask (an empty one is rejected)."""
        row = mask_row(file_name, height, width, counts, source, {"format": self.fmt, **extra})
        if row["area"] == 0:
            self.rejected(file, annotation, file_name, "empty mask: covers no pixel")
            return
        self.accepted(file, annotation, file_name, row, notes)

    def accepted(self, file, annotation, image, row: dict, notes=()) -> None:
        """Keep `row` (a mask row, or a click object) and report the annotation as imported."""
        self.rows.append(row)
        self.report.append(report_row(self.fmt, file, annotation, image, IMPORTED, "; ".join(notes) or None))

    def rejected(self, file, annotation, image, reason: str) -> None:
        self.report.append(report_row(self.fmt, file, annotation, image, REJECTED, reason))

    def check(self) -> None:
        """Every input annotation is reported once, and every imported one has its mask row."""
        imported = sum(r["status"] == IMPORTED for r in self.report)
        if len(self.report) != self.expected or imported != len(self.rows):
            raise RuntimeError(
                f"{self.fmt} importer lost annotations: {self.expected} in the input, {len(self.report)} "
                f"reported, {imported} imported but {len(self.rows)} mask rows; please report this bug"
            )


def mask_row(file_name: str, height: int, width: int, counts: str, source: str, extra: dict, **fields) -> dict:
    """A MASK_SCHEMA row of stage 'assisted' for a mask of an image named by its path under the root."""
    image = {"image_id": inputs.image_id(file_name), "file_name": file_name, "height": height, "width": width}
    return dataset.mask_row(image, counts, stage="assisted", source=source, extra=extra, **fields)


def report_row(fmt, file, annotation, image, status, reason) -> dict:
    return {
        "format": fmt,
        "file": str(file),
        "annotation": str(annotation),
        "image": image,
        "status": status,
        "reason": reason,
    }


def summarize(report: list[dict]) -> dict:
    """Counts of imported and rejected annotations, by reason kind (the text before the first ':')."""
    kinds = Counter(kind(r["reason"]) for r in report if r["status"] == REJECTED)
    notes = Counter(
        kind(note) for r in report if r["status"] == IMPORTED and r["reason"] for note in r["reason"].split("; ")
    )
    imported = sum(r["status"] == IMPORTED for r in report)
    summary = {
        "input_annotations": len(report),
        "imported": imported,
        "rejected": len(report) - imported,
        "rejected_by_reason": dict(sorted(kinds.items())),
        "imported_with_notes": dict(sorted(notes.items())),
    }
    if summary["imported"] + summary["rejected"] != summary["input_annotations"]:
        raise RuntimeError("import report does not add up; please report this bug")
    return summary


def kind(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0].strip()


REPORT_SCHEMA = pa.schema(
    [
        ("format", pa.string()),
        ("file", pa.string()),
        ("annotation", pa.string()),
        ("image", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)


def inputs_digest(*paths: str | None) -> str:
    """SHA-256 of the annotation and click inputs (files by content, folders by names, sizes and times;
    None skipped)."""
    h = hashlib.sha256()
    for given in paths:
        if given:
            path = Path(given).expanduser()
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for p in files:
                stat = p.stat()
                h.update(f"{p}:{stat.st_size}:{stat.st_mtime_ns}".encode() if path.is_dir() else p.read_bytes())
    return h.hexdigest()


def write_report(out_dir: Path, report: list[dict]) -> dict:
    """import_report.parquet (one row per input annotation) and its counts."""
    dataset.write_atomic(dataset.table(report, REPORT_SCHEMA), out_dir / "import_report.parquet")
    return summarize(report)
