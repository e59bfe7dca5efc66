"""Errors a user can fix.

The CLI prints a UserError as one line (no traceback) and exits 2. Config checks (data_engine.schema)
raise ConfigError with a message that starts with the key: `train.steps: must be an integer >= 1, got 0`.
"""

from __future__ import annotations

import math


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
