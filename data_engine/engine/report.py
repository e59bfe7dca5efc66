"""The loop's report: OUT/engine_report.json and OUT/engine_report.html (tables and embedded plots,
built with io.html_report's kit).

Per step: what went in and out (its summary's figures; images, masks and masks per image of its
images/ table; for imports of click sessions, how closely the model followed the clicks). Per model
of the loop (the engine command's, then each retrained one): its quality on the held-out expert set.
Per stage-2 round: what the annotators were shown and did, with and without the verifier (review.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from data_engine.engine import evaluate, review
from data_engine.io.atomic import write_text_atomic
from data_engine.io.html_report import esc, figure, fmt, img_tag, page, table, to_png
from data_engine.stages.engine import Evaluate

JSON = "engine_report.json"
HTML = "engine_report.html"
QUALITY = ["point_miou", "iou_correlation", "recall@0.5", "recall@0.75", "masks_per_image"]
NOTE = (
    "Each step is one stage run into its own folder. Model quality is measured on the held-out expert set "
    "(evaluate.experts): single-point mean IoU (one point at the innermost pixel of each object, best of "
    "SAM's 3 masks), and the automatic stage's recall at IoU 0.5 and 0.75 (its masks matched one to one to "
    "the expert masks, as the audit stage does)."
)


def write(cfg: dict, steps: list[dict], settings: Evaluate | None, out_dir: Path, record_of) -> dict:
    """Build the report document, write the JSON and HTML (only when they changed), return it."""
    doc = document(cfg, steps, settings, out_dir, record_of)
    save_if_changed(json.dumps(doc, indent=2, default=str), out_dir / JSON)
    save_if_changed(html_page(doc), out_dir / HTML)
    return doc


def save_if_changed(text: str, path: Path) -> None:
    """A rerun that changes nothing rewrites nothing."""
    if not path.is_file() or path.read_text() != text:
        write_text_atomic(text, path)


# ----------------------------------------------------------------------------------------------
# The document
# ----------------------------------------------------------------------------------------------


def document(cfg: dict, steps: list[dict], settings: Evaluate | None, out_dir: Path, record_of) -> dict:
    rows = [step_entry(step, record_of(step)) for step in steps]
    models = model_entries(cfg, steps, rows, out_dir) if settings else []
    totals = {
        "steps_done": sum(r["status"] == "done" for r in rows),
        "steps_failed": [r["folder"] for r in rows if r["status"] == "failed"],
    }
    if models and models[-1]["figures"]:
        totals["final_model"] = {"model": models[-1]["model"], **models[-1]["figures"]}
    audits = [r for r in rows if r["stage"] == "audit" and r["status"] == "done"]
    if audits:
        totals["final_audit"] = {"step": audits[-1]["folder"], **audits[-1]["summary"]}
    stage2 = review.rounds(steps, rows)
    if stage2["comparisons"]:
        totals["verifier"] = stage2["comparisons"][-1]
    return {
        "engine": cfg["engine"].get("description"),
        "output": str(out_dir),
        "evaluate": asdict(settings) if settings else None,
        "steps": rows,
        "models": models,
        "stage2": stage2,
        "totals": totals,
    }


def step_entry(step: dict, record: dict | None) -> dict:
    """What went in and out of one step, from its record and its folder."""
    status = "not run" if record is None or record["hash"] != step["hash"] else record["status"]
    entry = {
        "folder": step["folder"],
        "name": step["name"],
        "stage": step["stage"],
        "round": step["round"],
        "status": status,
        "seconds": record.get("seconds") if status == "done" else None,
        "overrides": step["overrides"],
        "left_out": step["dropped"],
        "depends": step["depends"],
        "summary": numbers(record.get("summary") or {}) if status == "done" else {},
        "dataset": dataset_counts(Path(step["dir"])) if status == "done" else None,
    }
    if status == "failed":
        entry["error"] = record.get("error")
    if status == "done" and step["stage"] == "assisted":
        entry["clicks"] = click_figures(Path(step["dir"]))
    return entry


def numbers(summary: dict, prefix: str = "") -> dict:
    """The numeric figures of a stage's summary, nested ones as 'outer.inner'."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, bool) or key == "seconds":
            continue
        if isinstance(value, (int, float)):
            out[prefix + key] = value
        elif isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}."))
    return out


def dataset_counts(step_dir: Path) -> dict | None:
    """Images, masks and masks per image of a step that writes an images/ table."""
    from data_engine.io.dataset import Dataset

    if not (step_dir / "images").is_dir():
        return None
    rows = Dataset.open(step_dir).images(columns=["status", "num_masks"]).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    masks = sum(r["num_masks"] or 0 for r in ok)
    return {
        "images": len(ok),
        "images_failed": len(rows) - len(ok),
        "masks": masks,
        "masks_per_image": masks / max(len(ok), 1),
    }


def click_figures(step_dir: Path) -> dict | None:
    """Replayed click sessions of an import: mean IoU with the annotator's final mask after the first
    and after the last click, and clicks per object."""
    import pyarrow.compute as pc

    from data_engine.io.dataset import Dataset

    clicked = Dataset.open(step_dir).masks(pc.field("source") == "click", ["extra"])
    extras = [json.loads(r["extra"]) for r in clicked.to_pylist()]
    scored = [e["iou_per_click"] for e in extras if e.get("iou_per_click")]
    if not scored:
        return None
    return {
        "sessions": len(scored),
        "clicks_per_object": sum(len(s) for s in scored) / len(scored),
        "iou_first_click": sum(s[0] for s in scored) / len(scored),
        "iou_last_click": sum(s[-1] for s in scored) / len(scored),
    }


def model_entries(cfg: dict, steps: list[dict], rows: list[dict], out_dir: Path) -> list[dict]:
    """Each model of the loop, what it was trained on, and its figures (None until evaluated)."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for model in evaluate.candidates(cfg, steps):
        row = by_name.get(model["name"], {})
        out.append(
            {
                "model": model["name"],
                "step": row.get("folder"),
                "trained_images": row.get("summary", {}).get("images"),
                "trained_masks": row.get("summary", {}).get("masks"),
                "figures": evaluate.read(out_dir, model["name"]) if row.get("status", "done") == "done" else None,
            }
        )
    return out


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------


def html_page(doc: dict) -> str:
    title = "Data engine loop" + (f": {doc['engine']}" if doc["engine"] else "")
    parts = [f"<p>{esc(NOTE)}</p>", f"<p>output: {esc(doc['output'])}</p>"]
    parts += ["<h2>Steps</h2>", steps_table(doc["steps"])]
    if doc["models"]:
        parts += ["<h2>Model quality per round</h2>", models_table(doc["models"])]
        if any(m["figures"] for m in doc["models"]):
            parts.append(img_tag(quality_plot(doc["models"]), alt="quality per round"))
    parts += review.html_section(doc["stage2"])
    counted = [s for s in doc["steps"] if s["dataset"]]
    if counted:
        parts.append(img_tag(masks_plot(counted), alt="masks per image"))
    for stage in ("annotate", "assisted", "detector", "semi", "semi_merge", "verifier", "audit"):
        rows = [s for s in doc["steps"] if s["stage"] == stage and s["status"] == "done"]
        if rows:
            parts += [f"<h2>{esc(stage)} steps</h2>", figures_table(rows)]
    parts += ["<h2>Step definitions</h2>", definitions_table(doc["steps"])]
    return page(title, parts)


def steps_table(steps: list[dict]) -> str:
    header = ["step", "stage", "status", "seconds", "images out", "masks out", "masks per image", "note"]
    rows = []
    for s in steps:
        d = s["dataset"] or {}
        note = s.get("error") or ""
        rows.append(
            [
                s["folder"],
                s["stage"],
                s["status"],
                fmt(s["seconds"]),
                fmt(d.get("images")),
                fmt(d.get("masks")),
                fmt(d.get("masks_per_image")),
                note,
            ]
        )
    return table(rows, header)


def models_table(models: list[dict]) -> str:
    header = ["model", "trained on images", "trained on masks"] + QUALITY
    rows = [
        [m["model"], fmt(m["trained_images"]), fmt(m["trained_masks"])]
        + [fmt((m["figures"] or {}).get(k)) for k in QUALITY]
        for m in models
    ]
    return table(rows, header)


def figures_table(steps: list[dict]) -> str:
    """Every figure of the steps' summaries (and click-replay figures), one column per step."""
    merged = [{**s["summary"], **{f"clicks.{k}": v for k, v in (s.get("clicks") or {}).items()}} for s in steps]
    keys = sorted({k for m in merged for k in m})
    return table([[k] + [fmt(m.get(k)) for m in merged] for k in keys], ["figure"] + [s["folder"] for s in steps])


def definitions_table(steps: list[dict]) -> str:
    rows = [[s["folder"], " ".join(s["overrides"]), " ".join(s["left_out"]) or "-"] for s in steps]
    return table(rows, ["step", "overrides (references resolved)", "left out (no earlier step yet)"])


def quality_plot(models: list[dict]) -> bytes:
    """The quality figures of each model, in the order the loop made them."""
    fig, axes = figure(width=8)
    ax = axes[0, 0]
    names = [m["model"] for m in models]
    for key in ("point_miou", "recall@0.5", "recall@0.75"):
        values = [(m["figures"] or {}).get(key) for m in models]
        xs = [i for i, v in enumerate(values) if v is not None]
        ax.plot(xs, [values[i] for i in xs], marker="o", label=key)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set(ylim=(0, 1.02), ylabel="on the held-out expert set", title="model quality per round")
    ax.legend()
    return to_png(fig)


def masks_plot(steps: list[dict]) -> bytes:
    """Masks per image written by each step that writes masks."""
    fig, axes = figure(width=8)
    ax = axes[0, 0]
    ax.bar(range(len(steps)), [s["dataset"]["masks_per_image"] for s in steps], color="#4477aa")
    ax.set_xticks(range(len(steps)), [s["folder"] for s in steps], rotation=30, ha="right")
    ax.set(ylabel="masks per image", title="masks per image, by step")
    return to_png(fig)
