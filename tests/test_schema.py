"""The typed-section parser: types, ranges, choices, paths and nested sections, each refusal one line
starting with the key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from data_engine.errors import ConfigError, require
from data_engine.schema import defaults, keys, parse, setting


@dataclass(frozen=True)
class Inner:
    strength: float = setting(0.25, gt=0)
    names: dict[str, str] = setting({"face": "face.xml"})


@dataclass(frozen=True)
class Section:
    steps: int = setting(10, ge=1)
    share: float = setting(0.5, ge=0, le=1)
    mode: str = setting("a", choices=("a", "b"))
    flag: bool = setting(False)
    limit: int | None = setting(None, ge=1)
    formats: list[str] = setting(["x"], choices=("x", "y"))
    folder: str | None = setting(None, exists="dir", hint="give a folder")
    inner: Inner = setting(Inner())
    low: int = setting(1, ge=0)
    high: int = setting(2, ge=0)

    def check(self) -> None:
        require(self.low <= self.high, "s.low", f"must not exceed s.high ({self.high})")


def test_defaults_parse_and_are_plain_data():
    assert parse(Section, {}, "s") == Section()
    assert defaults(Section)["inner"] == {"strength": 0.25, "names": {"face": "face.xml"}}
    assert keys(Section)["inner"] == {"strength": {}, "names": {}}


def test_values_are_kept_as_given(tmp_path):
    got = parse(Section, {"steps": 3, "share": 1, "limit": 5, "folder": str(tmp_path), "inner": {"strength": 2}}, "s")
    assert (got.steps, got.share, got.limit, got.folder, got.inner.strength) == (3, 1, 5, str(tmp_path), 2)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"stepz": 1}, "s.stepz: unknown key; did you mean s.steps?"),
        ({"steps": 0}, "s.steps: must be an integer >= 1, got 0"),
        ({"steps": True}, "s.steps: must be an integer >= 1, got True"),
        ({"steps": None}, "s.steps: must be an integer >= 1, got null"),
        ({"share": float("nan")}, "s.share: must be a finite number in [0, 1], got nan"),
        ({"share": float("inf")}, "s.share: must be a finite number in [0, 1], got inf"),
        ({"share": "half"}, "s.share: must be a finite number in [0, 1], got 'half'"),
        ({"mode": "c"}, "s.mode: must be one of ['a', 'b'], got 'c'"),
        ({"flag": 1}, "s.flag: must be true or false, got 1"),
        ({"limit": 0}, "s.limit: must be an integer >= 1 or null, got 0"),
        ({"formats": ["z"]}, "s.formats: must be a list of values from ['x', 'y'], got ['z']"),
        ({"folder": "/no/such"}, "s.folder: /no/such is not a folder: give a folder"),
        ({"inner": {"strength": 0}}, "s.inner.strength: must be a finite number > 0, got 0"),
        ({"inner": {"names": {"face": 3}}}, "s.inner.names: must be a mapping of names to strings"),
        ({"inner": {"other": 3}}, "s.inner.other: unknown key"),
        ({"low": 3}, "s.low: must not exceed s.high (2)"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        parse(Section, raw, "s")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@dataclass(frozen=True)
class Needs:
    data: list[str] = setting([], required="give the data, e.g. n.data=[out]", exists="path")


def test_required_and_existing_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"^n\.data: give the data"):
        parse(Needs, {"data": []}, "n")
    with pytest.raises(ConfigError, match=r"^n\.data: /no/such does not exist$"):
        parse(Needs, {"data": [str(tmp_path), "/no/such"]}, "n")
    assert parse(Needs, {"data": [str(tmp_path)]}, "n").data == [str(tmp_path)]


@dataclass(frozen=True)
class Axes:
    thresh: float | list[float] | None = setting(None, ge=0, le=1)
    area: int | list[int | None] = setting(0, ge=0)


def test_a_value_or_a_list_of_them_each_in_range():
    assert parse(Axes, {"thresh": 0.5, "area": [None, 3]}, "a") == Axes(0.5, [None, 3])
    assert parse(Axes, {"thresh": [0, 1]}, "a").thresh == [0, 1]
    for raw, message in [
        (
            {"thresh": [0.5, 2]},
            "a.thresh: must be a finite number in [0, 1] or a list of finite numbers in [0, 1] or null, got [0.5, 2]",
        ),
        ({"thresh": float("nan")}, "a.thresh: must be a finite number in [0, 1] or a list of"),
        ({"area": None}, "a.area: must be an integer >= 0 or a list of integers >= 0 or nulls, got null"),
        ({"area": [1, -1]}, "a.area: must be an integer >= 0 or a list of integers >= 0 or nulls, got [1, -1]"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse(Axes, raw, "a")
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
