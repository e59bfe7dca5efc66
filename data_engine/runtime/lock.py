"""One run per output folder: a lock file (host, pid, start time) held for the whole run.

A second run on the same output.dir refuses at once (it does not wait). A lock left by a run that is
gone (same host, its pid no longer alive) is taken over with a log line; a lock of another host can
only be judged by a person, so the message says how to remove it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from data_engine.errors import UserError
from data_engine.runtime.runs import disk_errors

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class OutputLocked(UserError, RuntimeError):
    """Another run is writing to this output.dir."""


@contextmanager
def output_lock(out_dir: str | Path):
    """Hold `out_dir`/.lock while the block runs; released on exit, also on error. Folders the lock
    created are removed again if the run left them empty (e.g. it was refused before any work)."""
    path = Path(out_dir) / LOCK_NAME
    created = first_missing(path.parent)
    try:
        me = acquire(path)
        try:
            yield path
        finally:
            release(path, me)
    finally:
        if created is not None:
            remove_empty(path.parent, created)


def first_missing(folder: Path) -> Path | None:
    """The topmost folder of `folder`'s path that does not exist yet; None when `folder` exists."""
    missing = None
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        missing = parent
    return missing


def remove_empty(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to `top` while they are empty."""
    for parent in (folder, *folder.parents):
        try:
            parent.rmdir()
        except OSError:  # not empty (or already gone)
            return
        if parent == top:
            return


def acquire(path: Path) -> dict:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    # Create the lock; if it exists, take it over only from a run that is gone
    for _ in range(2):
        if create(path, me):
            return me
        holder = read_holder(path)
        if not is_stale(holder):
            raise OutputLocked(held_message(path, holder))
        log.warning("taking over %s from a run that is gone (host %s, pid %s)", path, holder["host"], holder["pid"])
        path.unlink(missing_ok=True)
    raise OutputLocked(held_message(path, read_holder(path)))


def create(path: Path, me: dict) -> bool:
    """Create the lock file exclusively (O_EXCL); False if it exists. A lock that cannot be written whole
    (a full disk) is removed: it is ours, and an empty one would hold the folder for good."""
    try:
        with disk_errors(path.parent):
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with disk_errors(path.parent), os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def read_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and {"host", "pid"} <= set(holder) else None


def is_stale(holder: dict | None) -> bool:
    """The holder ran on this host and its process no longer exists."""
    if holder is None or holder["host"] != socket.gethostname() or not isinstance(holder["pid"], int):
        return False
    return not pid_alive(holder["pid"])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def held_message(path: Path, holder: dict | None) -> str:
    out_dir = path.parent
    if holder is None:
        who = f"another run (its lock {path} cannot be read)"
    else:
        who = f"another run (host {holder['host']}, pid {holder['pid']}, started {holder.get('started')})"
    return (
        f"output.dir={out_dir} is in use by {who}: wait for it to finish or choose another output.dir; "
        f"if that run is gone, delete {path}"
    )


def release(path: Path, me: dict) -> None:
    """Remove the lock if it is still ours."""
    holder = read_holder(path)
    if holder is not None and holder["host"] == me["host"] and holder["pid"] == me["pid"]:
        path.unlink(missing_ok=True)
