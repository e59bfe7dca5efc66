"""Typed config sections: a dataclass per section, each field's range declared beside it, one parser.

A section's fields are its keys, with their defaults (what Hydra composes: `config.register_configs`
stores each section's defaults in Hydra's ConfigStore) and their ranges, declared with `setting`:

    @dataclass(frozen=True)
    class Synth:
        num_scenes: int = setting(100, ge=1)     # scenes written to output.dir/pictures
        min_size: int = setting(256, ge=32)
        shape: str = setting("box", choices=("box", "disc"))

        def check(self) -> None:                 # rules across fields, after every field passed
            require(self.min_size <= self.max_size, "synth.min_size", "must not exceed synth.max_size")

`parse(Synth, cfg["synth"], "synth")` returns a Synth or raises a ConfigError whose one line starts
with the dotted key: an unknown key, a value of the wrong type, NaN or infinity, a value out of range
or not among the choices, a path that does not exist. The annotation gives the type (bool, int,
float, str, list[...], dict, Any, a nested section, `X | None` for a nullable key, `X | list[X]` for a
value or a list of them; a range applies to the value and to each item). Parsing reads the file system
at most (paths that must exist); it writes nothing and builds nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path

from data_engine.errors import is_int, is_number, require

MISSING = dataclasses.MISSING


def setting(
    default,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices=None,
    exists: str | None = None,
    required: str | None = None,
    hint: str | None = None,
):
    """A section's field: its default and what a value must be.

    ge, gt, le, lt: bounds of a number; choices: the allowed values (of each item, for a list);
    exists: "path", "file" or "dir": a path (each, for a list) that must be there; required: what to
    say when the value is empty (null, "" or []), else empty is allowed; hint: what to do, added to
    the message of any other refusal.
    """
    rule = dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, exists=exists, required=required, hint=hint)
    rule = {k: v for k, v in rule.items() if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=rule)
    return dataclasses.field(default=default, metadata=rule)


def parse(cls, raw, key: str):
    """The composed section `raw` (a dict) as a `cls` instance, or a ConfigError naming the key."""
    require(isinstance(raw, dict), key, f"must be a mapping of settings, got {shown(raw)}")
    names = [f.name for f in dataclasses.fields(cls)]
    for name in raw:
        require(name in names, f"{key}.{name}", unknown_hint(f"{key}.{name}", names))
    hints = typing.get_type_hints(cls)
    values = {
        f.name: check_value(
            raw[f.name] if f.name in raw else plain(default(f)), hints[f.name], f.metadata, f"{key}.{f.name}"
        )
        for f in dataclasses.fields(cls)
    }
    section = cls(**values)
    if hasattr(section, "check"):
        section.check()
    return section


def defaults(cls) -> dict:
    """A section's defaults as plain data (nested sections as dicts): what Hydra composes."""
    return {f.name: plain(default(f)) for f in dataclasses.fields(cls)}


def keys(cls) -> dict:
    """{key: its sub-keys} of a section ({} for a leaf or a free-form mapping): every key it knows."""
    kinds = {name: optional(hint)[0] for name, hint in typing.get_type_hints(cls).items()}
    return {
        f.name: keys(kinds[f.name]) if dataclasses.is_dataclass(kinds[f.name]) else {} for f in dataclasses.fields(cls)
    }


def default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def plain(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def absolute(section, names: tuple[str, ...]):
    """`section` with its path fields `names` absolute (~ expanded, resolved); null paths stay null."""
    given = {name: getattr(section, name) for name in names}
    return dataclasses.replace(section, **{k: str(Path(v).expanduser().resolve()) for k, v in given.items() if v})


# ----------------------------------------------------------------------------------------------
# One value against its annotation and rule
# ----------------------------------------------------------------------------------------------


def check_value(value, hint, rule: dict, key: str):
    """`value` if it fits `hint` and `rule` (a nested section parsed), else a ConfigError naming `key`."""
    hint, nullable = optional(hint)
    advice = f": {rule['hint']}" if rule.get("hint") else ""
    if value is None or value == "" or value == []:
        require(not rule.get("required"), key, rule.get("required", ""))
    if value is None:
        require(nullable, key, f"must be {describe(hint, rule)}, got null{advice}")
        return None
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    either = " or null" if nullable else ""
    require(fits(value, hint, rule), key, f"must be {describe(hint, rule)}{either}, got {shown(value)}{advice}")
    check_paths(value, rule.get("exists"), key, advice)
    return value


def optional(hint) -> tuple[object, bool]:
    """(the type, whether null is allowed) of `X | None` (of `X | Y | None`: `X | Y`)."""
    if is_union(hint) and type(None) in typing.get_args(hint):
        rest = tuple(a for a in typing.get_args(hint) if a is not type(None))
        return (rest[0] if len(rest) == 1 else typing.Union[rest]), True
    return hint, hint is typing.Any


def is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def fits(value, hint, rule: dict) -> bool:
    if hint is typing.Any:
        return True
    if is_union(hint):  # any of its types (an item of list[X | None] may be null)
        return any(value is None if a is type(None) else fits(value, a, rule) for a in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    if origin is list:
        (item,) = typing.get_args(hint) or (typing.Any,)
        return isinstance(value, list) and all(fits(v, item, rule) for v in value)
    if origin is dict:
        free = hint is dict  # dict: any mapping; dict[str, str]: names to strings
        return isinstance(value, dict) and (free or all(isinstance(v, str) for v in value.values()))
    kind = {bool: lambda v: isinstance(v, bool), int: is_int, float: is_number, str: lambda v: isinstance(v, str)}
    if not kind[origin](value):
        return False
    return in_bounds(value, rule) and ("choices" not in rule or value in rule["choices"])


def in_bounds(value, rule: dict) -> bool:
    return (
        ("ge" not in rule or value >= rule["ge"])
        and ("gt" not in rule or value > rule["gt"])
        and ("le" not in rule or value <= rule["le"])
        and ("lt" not in rule or value < rule["lt"])
    )


def describe(hint, rule: dict) -> str:
    """What a value must be, as the message says it: 'an integer >= 1', 'a finite number in (0, 1]'."""
    if is_union(hint):
        return " or ".join(describe(a, rule) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint) or hint
    if "choices" in rule and origin is not list:
        return f"one of {sorted(rule['choices'], key=str)}"
    if origin is list:
        (item,) = typing.get_args(hint) or (typing.Any,)
        items = typing.get_args(item) if is_union(item) else (item,)
        return f"a list{'' if item is typing.Any else ' of ' + ' or '.join(plural(describe(a, rule)) for a in items)}"
    if origin is dict:
        return "a mapping of names to strings" if hint is not dict else "a mapping"
    noun = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(origin, "set")
    return noun + bounds(rule, origin is int)


def plural(text: str) -> str:
    if text.startswith("one of "):
        return "values from " + text.removeprefix("one of ")
    for one, many in (("an integer", "integers"), ("a finite number", "finite numbers"), ("a string", "strings")):
        if text.startswith(one):
            return many + text.removeprefix(one)
    return {"null": "nulls"}.get(text, text)


def bounds(rule: dict, integer: bool) -> str:
    """' >= 1', ' in [0, 1]', ' in (0, 1]', or '' without bounds."""
    low = ("[", rule["ge"]) if "ge" in rule else ("(", rule["gt"]) if "gt" in rule else None
    high = ("]", rule["le"]) if "le" in rule else (")", rule["lt"]) if "lt" in rule else None
    if low and high:
        return f" in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f" {'<=' if high[0] == ']' else '<'} {high[1]}"
    return ""


def check_paths(value, exists: str | None, key: str, advice: str) -> None:
    """Each path of `value` (a path or a list of them) is there: any path, a file, or a folder."""
    if not exists:
        return
    for path in value if isinstance(value, list) else [value]:
        found = Path(str(path)).expanduser()
        ok = {"path": found.exists, "file": found.is_file, "dir": found.is_dir}[exists]()
        what = {"path": "does not exist", "file": "is not a file", "dir": "is not a folder"}[exists]
        require(ok, key, f"{path} {what}{advice}")


def shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unknown_hint(path: str, known) -> str:
    """What to say of the unknown dotted key `path`: a close known key where there is one, else them all."""
    parent, _, key = path.rpartition(".")
    close = difflib.get_close_matches(key, list(known), n=1)
    if close:
        return f"unknown key; did you mean {parent + '.' if parent else ''}{close[0]}?"
    return f"unknown key; known{' under ' + parent if parent else ''}: {sorted(known)}"
