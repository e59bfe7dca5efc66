"""Stage 2's human pass in the loop's report: per semi_merge step, what the annotators were shown and
did, and the merged dataset's quality against the exact masks; a round run with and without the mask
verifier over the same images is compared.

A merge step's figures come from its summary (merge counts, the prefill's routes); its prefill step
(semi_merge.prefill) says whether a verifier routed it (verifier.checkpoint) and on which images
(input.path); the audit step of the merge (audit.pred = the merge's folder) gives precision and coverage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from data_engine.io.html_report import esc, fmt, table

WORK = ("shown", "kept", "edited", "deleted", "added", "accepted", "rejected", "accepted_replaced")
QUALITY = ("precision@0.75", "recall@0.75", "precision@0.9", "recall@0.9")
HEADER = ["merge step", "verifier", "prefilled", *WORK, "final masks", *QUALITY]
NOTE = (
    "Per stage-2 round: prefilled masks (before the verifier's routes), masks shown to the annotators, "
    "what the simulated annotators did with them (kept, edited, deleted) and drew (added), the masks the "
    "verifier accepted without review and rejected, accepted masks an annotator redrew, and the merged "
    "dataset's precision (share of its masks matching an exact mask at IoU >= t, one to one) and coverage "
    "(share of exact masks matched: recall). A round run with and without the verifier on the same images "
    "is compared below."
)


def rounds(steps: list[dict], rows: list[dict]) -> dict:
    """{"rounds": [one entry per done semi_merge step], "comparisons": [same images with vs without]}."""
    done = [(s, r) for s, r in zip(steps, rows) if r["status"] == "done"]
    by_dir = {path_key(s["dir"]): s for s, _ in done}
    audits = {path_key(s["cfg"]["audit"]["pred"]): s for s, _ in done if s["stage"] == "audit"}
    entries = [
        merge_entry(s, r, by_dir.get(path_key(s["cfg"]["semi_merge"]["prefill"])), audits.get(path_key(s["dir"])))
        for s, r in done
        if s["stage"] == "semi_merge"
    ]
    return {"rounds": entries, "comparisons": comparisons(entries)}


def path_key(path) -> str:
    return os.path.normpath(str(path))


def merge_entry(step: dict, row: dict, prefill: dict | None, audit: dict | None) -> dict:
    s = row["summary"]
    counts = {k: s.get(f"merge.{k}") for k in WORK if k != "rejected"}
    counts["rejected"] = s.get("routes.rejected", 0)
    verifier = prefill and prefill["cfg"]["verifier"]["checkpoint"]
    return {
        "step": row["folder"],
        "images": prefill["cfg"]["input"]["path"] if prefill else None,
        "verifier": Path(verifier).parent.name if verifier else None,
        "prefilled": (s.get("merge.prefilled") or 0) + counts["rejected"],
        **counts,
        "final_masks": s.get("merge.masks_after"),
        **audit_figures(audit),
    }


def audit_figures(audit: dict | None) -> dict:
    path = Path(audit["dir"]) / "metrics.json" if audit else None
    metrics = json.loads(path.read_text()) if path and path.is_file() else {}
    return {k: metrics.get(k) for k in QUALITY}


def comparisons(entries: list[dict]) -> list[dict]:
    """For images merged both with and without a verifier: the share of shown masks saved and the
    change of precision and coverage (with minus without)."""
    out = []
    for with_v in (e for e in entries if e["verifier"]):
        without = next((e for e in entries if not e["verifier"] and e["images"] == with_v["images"]), None)
        if without is None or not without["shown"]:
            continue
        change = {
            k: None if with_v[k] is None or without[k] is None else round(with_v[k] - without[k], 4) for k in QUALITY
        }
        out.append(
            {
                "with": with_v["step"],
                "without": without["step"],
                "shown_with": with_v["shown"],
                "shown_without": without["shown"],
                "fewer_shown": round(1 - with_v["shown"] / without["shown"], 4),
                "change": change,
            }
        )
    return out


def html_section(doc: dict) -> list[str]:
    """The report's stage-2 section (nothing when the loop has no merge step)."""
    if not doc["rounds"]:
        return []
    rows = [
        [e["step"], e["verifier"] or "-", e["prefilled"]]
        + [fmt(e[k]) for k in WORK]
        + [fmt(e["final_masks"])]
        + [fmt(e[k]) for k in QUALITY]
        for e in doc["rounds"]
    ]
    parts = ["<h2>Stage 2: what the annotators were shown and did</h2>", f"<p>{esc(NOTE)}</p>", table(rows, HEADER)]
    for c in doc["comparisons"]:
        change = ", ".join(f"{k} {v:+.3f}" for k, v in c["change"].items() if v is not None)
        text = (
            f"{c['with']} against {c['without']} (the same images): {c['shown_with']} masks shown instead of "
            f"{c['shown_without']} ({c['fewer_shown']:.0%} fewer); {change}."
        )
        parts.append(f"<p>{esc(text)}</p>")
    return parts
