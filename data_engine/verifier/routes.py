"""The three routes of stage 2's prefilled masks by their verifier score, and where a mask row records its
route. Imported without torch: the merge, the pre-annotations and the stages read routes.

`route(score, accept, reject)` sends a prefilled mask to one of three routes: accepted (kept without
review) at score >= accept, rejected (dropped) below reject, and review (shown to annotators) in between;
a threshold of None turns its route off. stage=semi writes the route into the row's `extra` JSON
(`extra.route`); `route_of(row)` is the one reader of it.
"""

from __future__ import annotations

import json

ACCEPTED, REVIEW, REJECTED = "accepted", "review", "rejected"
ROUTES = (ACCEPTED, REVIEW, REJECTED)


def route(score: float, accept: float | None, reject: float | None) -> str:
    if accept is not None and score >= accept:
        return ACCEPTED
    if reject is not None and score < reject:
        return REJECTED
    return REVIEW


def route_of(row: dict) -> str | None:
    """The route stage=semi gave a mask row (`extra.route`), or None: not routed."""
    return json.loads(row.get("extra") or "{}").get("route")
