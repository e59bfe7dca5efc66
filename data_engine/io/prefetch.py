"""Read the next items in the background while the current one is processed.

`prefetch(load, items, ahead, timeout)` yields (item, value or exception) in order. Each load runs in
its own daemon thread, at most `ahead` items ahead of the consumer, so decoding the next images
overlaps the model's work on this one. A load that takes longer than `timeout` seconds (once waited
for) is given up and reported as a LoadTimeout: its thread is left behind, and the next items go on.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Iterable, Iterator


class LoadTimeout(TimeoutError):
    """An item's load did not finish within the time limit."""


def prefetch(
    load: Callable, items: Iterable, ahead: int = 2, timeout: float | None = None
) -> Iterator[tuple[object, object]]:
    """(item, load(item)) in order, or (item, the exception load raised, or a LoadTimeout)."""
    items, started = iter(items), deque()
    # Keep `ahead` loads running beyond the one being waited for
    for item in items:
        started.append((item, start(load, item)))
        if len(started) > ahead:
            yield wait(*started.popleft(), timeout)
    while started:
        yield wait(*started.popleft(), timeout)


def start(load: Callable, item) -> Future:
    """Run load(item) in a daemon thread (a stuck load never keeps the process alive)."""
    future = Future()

    def work():
        try:
            future.set_result(load(item))
        except BaseException as err:  # handed to the consumer, who decides
            future.set_exception(err)

    threading.Thread(target=work, name=f"prefetch-{item}", daemon=True).start()
    return future


def wait(item, future: Future, timeout: float | None) -> tuple[object, object]:
    try:
        return item, future.result(timeout)
    except FutureTimeout:
        return item, LoadTimeout(f"timed out after {timeout:g} s reading/decoding")
    except Exception as err:
        return item, err
