"""Quality audits: generated masks against expert masks, as SA-1B's 500-image check.

load -> match (per-image IoU, one-to-one assignment) -> boundary (boundary IoU) -> metrics
(aggregates, AR with COCOeval) -> report (self-contained HTML). `core.audit` runs them in order.
"""
