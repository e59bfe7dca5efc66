"""The audit's report.html: figure tables, plots and the worst images' overlays (io.html_report's kit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_engine.audit import metrics
from data_engine.io import rle
from data_engine.io.html_report import esc, figure, fmt, img_tag, page, table, to_png
from data_engine.io.images import load_rgb
from data_engine.io.overlays import draw, outline

HEADLINE = [
    "images",
    "expert_masks",
    "pred_masks",
    "matched_pairs",
    "expert_unmatched",
    "pred_unmatched",
    "frac_iou_above_0.90",
    "frac_iou_above_0.75",
    "mean_iou",
    "median_iou",
    "mean_boundary_iou",
    "recall@0.5",
    "recall@0.75",
    "recall@0.9",
    "precision@0.5",
    "ar@10",
    "ar@100",
    "ar@1000",
]
GROUP_COLUMNS = [
    "expert_masks",
    "pred_masks",
    "matched_pairs",
    "frac_iou_above_0.90",
    "frac_iou_above_0.75",
    "mean_iou",
    "mean_boundary_iou",
    "recall@0.5",
    "recall@0.75",
    "recall@0.9",
    "precision@0.5",
    "ar@100",
    "ar@1000",
]
NOTE = (
    "Generated masks matched one to one to expert masks per image (largest summed IoU). SA-1B's audit of "
    "500 images found 94% of pairs with IoU > 0.90 and 97% > 0.75. Recall: share of expert masks matched "
    "with IoU >= t; precision: share of generated masks. AR@k: class-agnostic COCO mask AR. Boundary IoU: "
    "band of 2% of the image diagonal."
)
WORST_COLUMNS = [
    "file_name",
    "expert_mean_iou",
    "expert_masks",
    "pred_masks",
    "matched_pairs",
    "mean_iou",
    "recall@0.5",
]


def write_report(result: dict, path: str | Path, image_root: str | Path | None, title: str, inputs: dict) -> None:
    """report.html from audit() output; `image_root` holds the images for the worst-image overlays."""
    m = result["metrics"]
    parts = [
        f"<p>{esc(NOTE)}</p>",
        settings_table(inputs),
        "<h2>Summary</h2>",
        table([[k, fmt(m.get(k))] for k in HEADLINE], ["figure", "value"]),
        "<h2>By object size</h2>",
        group_table(m["by_size"]),
        "<h2>By stage</h2>",
        group_table(m["by_stage"]),
        "<h2>By source</h2>",
        group_table(m["by_source"]),
        "<h2>Plots</h2>",
        img_tag(iou_histograms(result["rows"])),
        img_tag(recall_curves(result["rows"], result["stage_rows"])),
        img_tag(size_bars(m["by_size"])),
        *calibration_section(m.get("verifier_calibration")),
        "<h2>Worst images</h2>",
        table([[fmt(w.get(c)) for c in WORST_COLUMNS] for w in m["worst_images"]], WORST_COLUMNS),
        *worst_overlays(result, image_root),
    ]
    Path(path).write_text(page(title, parts))


def calibration_section(calibrated: dict | None) -> list[str]:
    """The verifier's calibration: per score bin, masks, mean score and the share matching an expert."""
    if not calibrated:
        return []
    note = (
        f"Generated masks by their verifier_score: the share matching an expert mask at IoU >= "
        f"{calibrated['label_iou']} (one to one). A calibrated verifier's share is close to its mean score; "
        f"ROC AUC {fmt(calibrated['roc_auc'])} over {calibrated['masks']} scored masks."
    )
    header = ["score", "masks", "mean score", "share matching an expert"]
    rows = [
        [f"{b['low']:.1f}-{b['high']:.1f}", b["masks"], fmt(b["mean_score"]), fmt(b["acceptable"])]
        for b in calibrated["bins"]
    ]
    return ["<h2>Verifier calibration</h2>", f"<p>{esc(note)}</p>", table(rows, header)]


def group_table(groups: dict) -> str:
    if not groups:
        return "<p>none</p>"
    return table(
        [[name] + [fmt(g.get(c)) for c in GROUP_COLUMNS] for name, g in groups.items()], ["group"] + GROUP_COLUMNS
    )


def settings_table(inputs: dict) -> str:
    return table([[k, fmt(v)] for k, v in inputs.items()], ["setting", "value"])


def iou_histograms(rows: list[dict]) -> bytes:
    """Histograms of mask IoU and boundary IoU over matched pairs, SA-1B's thresholds marked."""
    fig, axes = figure(2)
    for ax, key, label in zip(axes[0], ("iou", "boundary_iou"), ("mask IoU", "boundary IoU")):
        values = [r[key] for r in rows if r[key] is not None]
        ax.hist(values, bins=np.linspace(0, 1, 41), color="#4477aa")
        for t in metrics.PAIR_THRESHOLDS:
            ax.axvline(t, color="#cc3311", linestyle="--", linewidth=1)
        ax.set(xlabel=label, ylabel="matched pairs", title=f"{label} of {len(values)} matched pairs")
    return to_png(fig)


def recall_curves(rows: list[dict], stage_rows: dict) -> bytes:
    """Recall of expert masks against the IoU threshold, all generated masks and each stage alone."""
    thresholds = np.linspace(0, 1, 101)
    fig, axes = figure()
    ax = axes[0, 0]
    ax.plot(thresholds, metrics.recall_curve(rows, thresholds), label="all", linewidth=2)
    for stage, group in stage_rows.items():
        if len(stage_rows) > 1:
            ax.plot(thresholds, metrics.recall_curve(group, thresholds), label=f"stage {stage}", linewidth=1)
    ax.set(xlabel="IoU threshold", ylabel="recall of expert masks", ylim=(0, 1.02), title="recall vs IoU threshold")
    ax.legend()
    return to_png(fig)


def size_bars(by_size: dict) -> bytes:
    """Mean IoU and recall at 0.5 / 0.75 / 0.9 for small, medium and large objects."""
    keys = ["mean_iou", "recall@0.5", "recall@0.75", "recall@0.9"]
    fig, axes = figure(width=7)
    ax = axes[0, 0]
    x = np.arange(len(by_size))
    for i, key in enumerate(keys):
        values = [by_size[s][key] or 0.0 for s in by_size]
        ax.bar(x + (i - 1.5) * 0.2, values, width=0.2, label=key)
    counts = [by_size[s]["expert_masks"] for s in by_size]
    ax.set_xticks(x, [f"{s}\n({n} expert masks)" for s, n in zip(by_size, counts)])
    ax.set(ylim=(0, 1.18), title="by object size")
    ax.legend(fontsize=8, ncol=4, loc="upper center")
    return to_png(fig)


def worst_overlays(result: dict, image_root) -> list[str]:
    """For each worst image: expert masks, and the generated masks matched to them in the same colour
    (expert masks left unmatched outlined in red)."""
    by_file = {img["file_name"]: img for img in result["images"]}
    out = []
    for worst in result["metrics"]["worst_images"]:
        img = by_file[worst["file_name"]]
        picture, found = background(img, image_root)
        expert_view, pred_view = pair_views(img, picture)
        fig, axes = figure(2, width=5, height=5 * img["height"] / max(img["width"], 1))
        for ax, view, label in zip(
            axes[0], (expert_view, pred_view), ("expert masks", "matched generated masks; red: missed")
        ):
            ax.imshow(view)
            ax.set_axis_off()
            ax.set_title(label)
        note = "" if found else " (image file not found: grey background)"
        fig.suptitle(f"{img['file_name']}: expert mean IoU {fmt(worst['expert_mean_iou'])}{note}", fontsize=10)
        out.append(img_tag(to_png(fig), alt=img["file_name"]))
    return out


def background(img: dict, image_root) -> tuple[np.ndarray, bool]:
    path = Path(image_root) / img["file_name"] if image_root else None
    if path is not None and path.is_file():
        picture = load_rgb(path, max_pixels=1 << 62)
        if picture.shape[:2] == (img["height"], img["width"]):
            return picture, True
    return np.full((img["height"], img["width"], 3), 128, np.uint8), False


def pair_views(img: dict, picture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = img["height"], img["width"]
    colors = palette(max(len(img["expert"]), 1))
    expert = [rle.decode(m["counts"], h, w) for m in img["expert"]]
    matched = {e: p for p, e in img["pairs"]}
    expert_view = draw(picture, expert, colors, alpha=0.6)
    pred = [rle.decode(img["pred"][matched[e]]["counts"], h, w) for e in sorted(matched)]
    pred_view = draw(picture, pred, colors[sorted(matched)], alpha=0.6)
    missed = [expert[e] for e in range(len(expert)) if e not in matched]
    return expert_view, outline(pred_view, missed, (255, 0, 0), thickness=2)


def palette(n: int) -> np.ndarray:
    """[n, 3] distinct bright RGB colours (matplotlib's tab20, repeated)."""
    from matplotlib import colormaps

    table = (np.asarray(colormaps["tab20"].colors) * 255).astype(int)
    return table[np.arange(n) % len(table)]
