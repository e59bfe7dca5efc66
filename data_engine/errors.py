"""Errors a user can fix, and the one way to check a config value.

The CLI prints a UserError as one line (no traceback) and exits 2. Config checks raise ConfigError
with a message that starts with the key: `train.steps: must be an integer >= 1, got 0`.
"""

from __future__ import annotations

import math
from pathlib import Path


class UserError(Exception):
    """Bad input, config or environment; the message names what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config key has a value that cannot work; the message starts with the key."""


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def leaf(section: dict, key: str):
    """The value of dotted `key` (e.g. 'train.steps') in its section dict."""
    return section[key.rsplit(".", 1)[-1]]


def check_int(section: dict, key: str, minimum: int = 0, nullable: bool = False) -> None:
    value = leaf(section, key)
    if value is None and nullable:
        return
    require(is_int(value) and value >= minimum, key, f"must be an integer >= {minimum}, got {value!r}")


def check_number(section: dict, key: str, low: float | None = None, high: float | None = None, nullable=False) -> None:
    """A finite number within [low, high] (either bound may be None)."""
    value = leaf(section, key)
    if value is None and nullable:
        return
    ok = is_number(value) and (low is None or value >= low) and (high is None or value <= high)
    bounds = f" in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    require(ok, key, f"must be a finite number{bounds if (low, high) != (None, None) else ''}, got {value!r}")


def check_bool(section: dict, key: str) -> None:
    value = leaf(section, key)
    require(isinstance(value, bool), key, f"must be true or false, got {value!r}")


def check_choice(section: dict, key: str, choices) -> None:
    value = leaf(section, key)
    require(value in choices, key, f"must be one of {sorted(choices, key=str)}, got {value!r}")


def check_path(section: dict, key: str, nullable: bool = False, hint: str = "") -> None:
    """An existing file or folder."""
    value = leaf(section, key)
    if value is None and nullable:
        return
    require(bool(value) and Path(str(value)).expanduser().exists(), key, f"{value} does not exist{hint}")
