"""Why something failed, as one plain line: the root cause's type and message, no colour codes.

Ray wraps a worker's exception (RayTaskError, with the original as `.cause`) and colours its header;
a recorded reason (summary.json's shards_failed, an image row's error) names the exception that
actually happened, e.g. `OSError: [Errno 28] No space left on device`.
"""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
MAX_CHARS = 500
# Lines of Ray's actor-death message that identify rather than explain.
NOISE = ("Traceback (most recent call last)", 'File "', "class_name:", "actor_id:", "namespace:", "ip:")


def root_cause(err: BaseException) -> BaseException:
    """Follow Ray's `.cause` (a task error wrapping the worker's exception) to the exception itself."""
    seen = set()
    while id(err) not in seen and isinstance(getattr(err, "cause", None), BaseException):
        seen.add(id(err))
        err = err.cause
    return err


def reason(err: BaseException) -> str:
    """`Type: message` of the root cause on one line."""
    cause = root_cause(err)
    return f"{type(cause).__name__}: {one_line(str(cause))}".rstrip(": ")


def one_line(text: str) -> str:
    """Colour codes and Ray's noise lines dropped, the rest joined with ' | ', at most MAX_CHARS."""
    lines = [ln.strip() for ln in ANSI.sub("", text).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(NOISE)]
    text = " | ".join(lines)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
