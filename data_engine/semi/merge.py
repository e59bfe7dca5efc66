"""The human pass merged back: each annotator mask matched to the image's prefilled masks.

Per image, in this order:
1. an annotator mask identical to a not-yet-matched prefilled mask (same RLE) -> kept;
2. the remaining pairs by decreasing IoU: IoU >= edit_iou with a not-yet-matched prefilled mask -> edited;
3. annotator masks left over -> added (drawn by the annotator); prefilled masks left over -> deleted.

Prefilled masks the verifier accepted (`extra.route`: they were not shown) are kept as they are
(ACCEPTED), unless an added annotator mask lies over one (IoU >= edit_iou): the annotator's mask
replaces it (counted accepted_replaced).

Merged rows get stage "semi" and a source saying which: KEPT, EDITED, ADDED or ACCEPTED.
"""

from __future__ import annotations

import json

from data_engine.io import rle
from data_engine.io.dataset import mask_row
from data_engine.io.match import greedy_pairs
from data_engine.verifier.routes import ACCEPTED as ROUTE_ACCEPTED
from data_engine.verifier.routes import route_of

KEPT, EDITED, ADDED, ACCEPTED = "prefill_kept", "prefill_edited", "annotator", "prefill_accepted"
COUNTS = (
    "prefilled",
    "shown",
    "kept",
    "edited",
    "deleted",
    "added",
    "accepted",
    "accepted_replaced",
    "masks_before",
    "masks_after",
)


def match(prefilled: list[str], drawn: list[str], height: int, width: int, edit_iou: float) -> dict:
    """Indices into `prefilled` (p) and `drawn` (d):
    {"kept": [(d, p)], "edited": [(d, p, iou)], "added": [d], "deleted": [p]}."""
    free_p, free_d = set(range(len(prefilled))), set(range(len(drawn)))
    # Identical masks: kept unchanged
    by_counts: dict[str, list[int]] = {}
    for p in range(len(prefilled)):
        by_counts.setdefault(prefilled[p], []).append(p)
    kept = []
    for d in range(len(drawn)):
        same = [p for p in by_counts.get(drawn[d], []) if p in free_p]
        if same:
            kept.append((d, same[0]))
            free_p.discard(same[0])
            free_d.discard(d)
    # Changed masks: the best remaining overlaps at IoU >= edit_iou, greedily
    dl, pl = sorted(free_d), sorted(free_p)
    iou = rle.iou_matrix([drawn[d] for d in dl], [prefilled[p] for p in pl], height, width)  # [D, P]
    edited = [(dl[i], pl[j], v) for i, j, v in greedy_pairs(iou, edit_iou)]
    free_d -= {d for d, _, _ in edited}
    free_p -= {p for _, p, _ in edited}
    return {"kept": kept, "edited": edited, "added": sorted(free_d), "deleted": sorted(free_p)}


def merge_image(image: dict, prefilled: list[dict], drawn: list[dict], edit_iou: float) -> tuple[list[dict], dict]:
    """(merged mask rows, counts) of one image from its prefilled rows and the annotator's rows."""
    h, w = image["height"], image["width"]
    accepted = [r for r in prefilled if route_of(r) == ROUTE_ACCEPTED]
    shown = [r for r in prefilled if route_of(r) != ROUTE_ACCEPTED]
    found = match([r["segmentation"] for r in shown], [r["segmentation"] for r in drawn], h, w, edit_iou)
    rows = [kept_row(shown[p], drawn[d]) for d, p in found["kept"]]
    rows += [edited_row(image, shown[p], drawn[d], iou) for d, p, iou in found["edited"]]
    # Accepted masks stay, but those an added mask redraws
    added = [drawn[d]["segmentation"] for d in found["added"]]
    over = match([r["segmentation"] for r in accepted], added, h, w, edit_iou)
    replaced = {p for _, p in over["kept"]} | {p for _, p, _ in over["edited"]}
    rows += [accepted_row(r) for p, r in enumerate(accepted) if p not in replaced]
    rows += [added_row(image, drawn[d]) for d in found["added"]]
    counts = {
        "prefilled": len(prefilled),
        "shown": len(shown),
        "kept": len(found["kept"]),
        "edited": len(found["edited"]),
        "deleted": len(found["deleted"]),
        "added": len(found["added"]),
        "accepted": len(accepted),
        "accepted_replaced": len(replaced),
        "masks_before": len(prefilled),
        "masks_after": len(rows),
    }
    return rows, counts


def kept_row(prefill: dict, drawn: dict) -> dict:
    """The prefilled row itself (scores, prompt, detector box), marked kept, with the annotation's provenance."""
    extra = {
        **loads(prefill),
        "prefill_source": prefill["source"],
        "prefill_mask_id": prefill["mask_id"],
        "annotation": loads(drawn),
    }
    # A new mask_id: ids number the merged image's masks (the prefilled one is in extra)
    return {**prefill, "mask_id": None, "stage": "semi", "source": KEPT, "extra": json.dumps(extra, sort_keys=True)}


def edited_row(image: dict, prefill: dict, drawn: dict, iou: float) -> dict:
    """The annotator's mask, linked to the prefilled mask it replaces."""
    extra = {
        **loads(prefill),
        "prefill_source": prefill["source"],
        "prefill_mask_id": prefill["mask_id"],
        "iou_with_prefill": round(iou, 6),
        "annotation": loads(drawn),
    }
    return mask_row(image, drawn["segmentation"], stage="semi", source=EDITED, extra=extra)


def accepted_row(prefill: dict) -> dict:
    """A prefilled row the verifier accepted, as it was (a new mask_id, the prefilled one in extra)."""
    extra = {**loads(prefill), "prefill_source": prefill["source"], "prefill_mask_id": prefill["mask_id"]}
    return {**prefill, "mask_id": None, "source": ACCEPTED, "extra": json.dumps(extra, sort_keys=True)}


def added_row(image: dict, drawn: dict) -> dict:
    return mask_row(image, drawn["segmentation"], stage="semi", source=ADDED, extra={"annotation": loads(drawn)})


def loads(row: dict) -> dict:
    return json.loads(row["extra"]) if row.get("extra") else {}


def totals(per_image: list[dict]) -> dict:
    """Overall counts and masks per image before and after, over the images that were merged."""
    merged = [r for r in per_image if r["status"] == "ok"]
    out = {k: sum(r[k] for r in merged) for k in COUNTS}
    n = len(merged)
    out.update(
        images=n,
        images_without_annotator_masks=sum(r["kept"] + r["edited"] + r["added"] == 0 for r in merged),
        masks_per_image_before=round(out["masks_before"] / n, 3) if n else None,
        masks_per_image_after=round(out["masks_after"] / n, 3) if n else None,
    )
    return out
