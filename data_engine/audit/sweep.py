"""The sweep's figures: per image and grid point, the masks kept and how they match the expert masks;
per grid point, the audit's figures; the setting that reaches a recall target with the fewest masks; and
an HTML page with the table and a plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from data_engine.amg.select import near_duplicates
from data_engine.audit.metrics import pair_summary
from data_engine.audit.report import settings_table
from data_engine.io import rle
from data_engine.io.atomic import write_bytes_atomic, write_text_atomic
from data_engine.io.html_report import esc, figure, fmt, img_tag, page, table, to_png
from data_engine.io.match import exact_pairs

ROW_SCHEMA = pa.schema(
    [
        ("point", pa.int32()),  # index of the grid point
        ("image_id", pa.int64()),
        ("masks", pa.int32()),
        ("near_duplicates", pa.int32()),  # masks overlapping another kept mask at mask IoU >= near_iou
        ("expert_masks", pa.int32()),  # null: no expert set
        ("pair_iou", pa.list_(pa.float64())),  # IoU of each matched (generated, expert) pair
    ]
)
COLUMNS = [
    "masks_per_image",
    "near_duplicates_per_image",
    "recall@0.5",
    "recall@0.75",
    "frac_iou_above_0.90",
    "frac_iou_above_0.75",
    "mean_iou",
    "precision@0.5",
]


def image_row(
    point: int, image_id: int, counts: list[str], expert: list[str] | None, height: int, width: int, near_iou, min_iou
) -> dict:
    """One grid point's masks of one image (RLE counts) against its expert masks (RLE counts, or None)."""
    row = {"point": point, "image_id": image_id, "masks": len(counts)}
    row["near_duplicates"] = near_duplicates(counts, height, width, near_iou)
    if expert is None:
        return {**row, "expert_masks": None, "pair_iou": None}
    pairs = exact_pairs(rle.iou_matrix(counts, expert, height, width), min_iou)  # the audit's matching
    return {**row, "expert_masks": len(expert), "pair_iou": [iou for _, _, iou in pairs]}


def grid_figures(rows: list[dict], points: list[dict], has_expert: bool) -> list[dict]:
    """Per grid point: its settings and figures from image_row rows (all images of the sweep); the audit's
    figures over the images the expert set holds."""
    by_point: dict[int, list[dict]] = {}
    for r in rows:
        by_point.setdefault(r["point"], []).append(r)
    out = []
    for p, settings in enumerate(points):
        mine = by_point.get(p, [])
        images, masks = len(mine), sum(r["masks"] for r in mine)
        figures = {
            **settings,
            "images": images,
            "masks_per_image": masks / images if images else None,
            "near_duplicates_per_image": sum(r["near_duplicates"] for r in mine) / images if images else None,
        }
        if has_expert:
            audited = [r for r in mine if r["expert_masks"] is not None]
            iou = np.array([v for r in audited for v in r["pair_iou"]], dtype=np.float64)
            n_expert, n_pred = sum(r["expert_masks"] for r in audited), sum(r["masks"] for r in audited)
            figures.update(audited_images=len(audited), **pair_summary(iou, np.zeros(0), n_expert, n_pred))
        out.append(figures)
    return out


def best_point(figures: list[dict], recall_at: float, target: float) -> int | None:
    """The grid point with the fewest masks per image among those whose recall@recall_at reaches target
    (ties: the higher recall); None when none does or there is no expert set."""
    key = f"recall@{recall_at:g}"
    reach = [i for i, f in enumerate(figures) if (f.get(key) or 0) >= target]
    return min(reach, key=lambda i: (figures[i]["masks_per_image"], -figures[i][key])) if reach else None


def write_page(
    path: Path, figures: list[dict], axes: list[str], best: int | None, pilot: int | None, settings: dict
) -> None:
    """sweep.html: the settings, the named setting, one table row per grid point (`pilot`: the one at the
    pilot's own settings, if any), the plot (also written beside it as sweep.png)."""
    has_expert = "recall@0.5" in figures[0]
    columns = [c for c in COLUMNS if has_expert or c in ("masks_per_image", "near_duplicates_per_image")]
    marks = {best: " (named)", pilot: " (pilot)"} if best != pilot else {best: " (named, pilot)"}
    rows = [[f"{i}{marks.get(i, '')}"] + [fmt(f[k]) for k in axes + columns] for i, f in enumerate(figures)]
    target = f"recall@{settings['recall_at']:g} >= {settings['recall_target']}"
    named = (
        f"<p><b>Fewest masks per image reaching {esc(target)}:</b> grid point {best}: "
        + ", ".join(f"{k}={fmt(figures[best][k])}" for k in axes)
        + "</p>"
        if best is not None
        else f"<p>No grid point reaches {esc(target)}.</p>"
        if has_expert
        else "<p>No expert set (audit.expert): masks per image only.</p>"
    )
    parts = [
        settings_table(settings),
        named,
        table(rows, ["point"] + axes + columns),
    ]
    if has_expert:
        png = recall_plot(figures, best, pilot, settings["recall_at"], settings["recall_target"])
        write_bytes_atomic(png, path.with_suffix(".png"))
        parts.append(img_tag(png))
    write_text_atomic(page("Threshold sweep", parts), path)


def recall_plot(figures: list[dict], best: int | None, pilot: int | None, recall_at: float, target: float) -> bytes:
    """Recall at IoU 0.5 and 0.75 against masks per image, one dot per grid point; the target recall
    dashed, the named point ringed, the pilot's own settings crossed."""
    fig, axes = figure(1, 6.5, 4.0)
    ax = axes[0][0]
    x = np.array([f["masks_per_image"] for f in figures], dtype=float)
    for key, colour in (("recall@0.5", "tab:blue"), ("recall@0.75", "tab:orange")):
        y = np.array([f[key] if f[key] is not None else np.nan for f in figures], dtype=float)
        ax.scatter(x, y, s=18, color=colour, label=key)
        if key != f"recall@{recall_at:g}":
            continue
        ax.axhline(target, color=colour, linestyle="--", linewidth=0.8, label=f"target {key}")
        if best is not None:
            ax.scatter([x[best]], [y[best]], s=120, facecolors="none", edgecolors="black", label="named setting")
        if pilot is not None:
            ax.scatter([x[pilot]], [y[pilot]], s=80, marker="x", color="black", label="pilot's settings")
    ax.set_xlabel("masks per image")
    ax.set_ylabel("recall of expert masks")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return to_png(fig)
