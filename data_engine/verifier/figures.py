"""How well verifier scores sort masks: ROC AUC, what each route holds at two thresholds, calibration.

Used on held-out masks by stage=verifier and on an audit's pairs by stage=audit.
"""

from __future__ import annotations

import numpy as np

from data_engine.verifier.routes import ACCEPTED, REJECTED, REVIEW, route


def metrics(scores: np.ndarray, labels: np.ndarray, accept: float | None, reject: float | None) -> dict:
    """ROC AUC, and what each route would hold at the thresholds: how many masks (and their share), the
    share of them acceptable (of the accepted route: its precision), and the share of all acceptable
    masks it holds (its recall; of the rejected route: the good masks lost)."""
    labels = labels.astype(bool)
    routes = np.array([route(s, accept, reject) for s in scores])
    out = {"masks": len(labels), "acceptable": int(labels.sum()), "roc_auc": roc_auc(scores, labels)}
    for name in (ACCEPTED, REVIEW, REJECTED):
        held = routes == name
        out[name] = {
            "masks": int(held.sum()),
            "share": round(float(held.mean()), 4) if len(held) else None,
            "acceptable": round(float(labels[held].mean()), 4) if held.any() else None,
            "recall": round(float((held & labels).sum() / labels.sum()), 4) if labels.any() else None,
        }
    out["thresholds"] = {"accept": accept, "reject": reject}
    return out


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The chance a random acceptable mask scores above a random unacceptable one (ties count 1/2);
    None without both kinds."""
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return None
    ranks = rank(np.concatenate([pos, neg]))
    return round(float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))), 4)


def rank(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values given their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def calibration(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Per score bin of width 1/bins: masks, their mean score, and the share acceptable (a calibrated
    verifier's share is close to its mean score)."""
    labels = labels.astype(bool)
    which = np.minimum((scores * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        held = which == b
        if held.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "masks": int(held.sum()),
                    "mean_score": round(float(scores[held].mean()), 4),
                    "acceptable": round(float(labels[held].mean()), 4),
                }
            )
    return rows
