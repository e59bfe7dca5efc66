"""The kit of the project's self-contained HTML reports: a page, tables, and matplotlib figures embedded as
base64 PNG. The audit's report (audit/report.py) and the engine's (engine/report.py) are built with it;
it lives in io, the lowest layer both may import (tests/test_architecture.py)."""

from __future__ import annotations

import base64
import html
import io

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
    "td:first-child{text-align:left}img{max-width:100%}"
)


def page(title: str, parts: list[str]) -> str:
    """A whole HTML document: the title as its heading, then the parts (HTML snippets), one per line."""
    body = "\n".join([f"<h1>{esc(title)}</h1>", *parts])
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def esc(value) -> str:
    return html.escape(str(value))


def fmt(value) -> str:
    """A figure as a table shows it: floats to 3 decimals, None as '-'."""
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(rows: list[list], header: list[str]) -> str:
    """An HTML table of already formatted cells (escaped here)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def img_tag(png: bytes, alt: str = "plot") -> str:
    return f"<p><img alt='{esc(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'></p>"


def figure(ncols: int = 1, width: float = 6.0, height: float = 3.5):
    """(figure, [1, ncols] axes) of matplotlib's file-only backend; each plot `width` x `height` inches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)


def to_png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
