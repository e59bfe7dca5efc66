"""Every config section is a typed dataclass checked once, in one place: each refuses an unknown key and
a NaN in one line naming the key; validating writes and builds nothing; the CLI checks a stage's
section once."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from data_engine.config import shared_sections, validate
from data_engine.errors import ConfigError
from data_engine.stages import STAGES, sections

REPO = Path(__file__).resolve().parents[1]


def stage_inputs(tmp_path: Path) -> dict[str, list[str]]:
    """The overrides each stage cannot validate without: existing inputs under tmp_path."""
    dataset = tmp_path / "dataset"
    (dataset / "masks").mkdir(parents=True, exist_ok=True)
    (dataset / "run.json").write_text("{}")
    export = tmp_path / "export.json"
    export.write_text("{}")
    return {
        "annotate": [f"annotate.source={dataset}"],
        "assisted": [f"assisted.annotations={export}"],
        "audit": [f"audit.pred={dataset}", f"audit.expert={dataset}"],
        "detector": [f"detector.data=[{dataset}]"],
        "export": [f"export.dataset={dataset}"],
        "release": [f"release.data=[{dataset}]"],
        "semi_merge": [f"semi_merge.prefill={dataset}", f"semi_merge.annotations={export}"],
        "sweep": [f"sweep.pilot={dataset}", f"sweep.expert={dataset}"],
        "train": [f"train.data=[{dataset}]"],
        "verifier": [f"verifier.data=[{dataset}]"],
    }


def stage_cfg(make_cfg, tmp_path, stage: str) -> dict:
    return make_cfg(f"stage={stage}", *stage_inputs(tmp_path).get(stage, []))


def float_key(cls, prefix: str) -> str | None:
    """The dotted key of the section's first float field (nested sections searched too), or None."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, key = hints[field.name], f"{prefix}.{field.name}"
        if dataclasses.is_dataclass(kind):
            found = float_key(kind, key)
            if found:
                return found
        elif kind is float or kind == float | None:
            return key
    return None


def set_key(cfg: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def refusal(cfg: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    return str(err.value)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_section_refuses_an_unknown_key_and_a_nan_in_one_line_naming_the_key(make_cfg, tmp_path, stage):
    cfg = stage_cfg(make_cfg, tmp_path, stage)
    validate(cfg)
    own = sections().get(stage)
    checked = {**shared_sections(), **({stage: own} if own else {})}
    assert set(checked) <= set(cfg), "every section is composed into the stage's config"
    for name, cls in checked.items():
        broken = copy.deepcopy(cfg)
        broken[name]["no_such_key"] = 1
        message = refusal(broken)
        assert message.startswith(f"{name}.no_such_key: unknown key") and "\n" not in message, message
        key = float_key(cls, name)
        if key is None:
            continue
        for bad in (math.nan, math.inf):
            broken = copy.deepcopy(cfg)
            set_key(broken, key, bad)
            message = refusal(broken)
            assert message.startswith(f"{key}: must be a finite number") and "\n" not in message, message


def test_a_section_of_another_stage_is_refused(make_cfg):
    cfg = make_cfg("stage=auto")
    cfg["synth"] = {"num_scenes": 3}
    assert refusal(cfg).startswith("synth: unknown key")


@pytest.mark.parametrize(
    "stage, setting, key",
    [
        ("auto", "verifier.accept=1.5", "verifier.accept"),
        ("semi", "verifier.reject=-0.1", "verifier.reject"),
        ("semi", "verifier.reject=0.9", "verifier.reject"),  # not below verifier.accept (0.9)
        ("verifier", "verifier.width=12", "verifier.width"),
        ("verifier", "verifier.data=[]", "verifier.data"),
    ],
)
def test_the_verifier_section_checks_its_ranges_once_for_every_stage(make_cfg, tmp_path, stage, setting, key):
    cfg = make_cfg(f"stage={stage}", *stage_inputs(tmp_path).get(stage, []), setting)
    message = refusal(cfg)
    assert message.startswith(f"{key}: ") and "\n" not in message, message


def test_validation_writes_nothing_and_builds_no_blur_detector(make_cfg, tmp_path, monkeypatch):
    from data_engine.release import blur

    def refuse(*args, **kwargs):
        raise AssertionError("validation built the blur detector")

    monkeypatch.setattr(blur.PrivacyBlur, "__init__", refuse)
    for stage in sorted(STAGES):
        cfg = stage_cfg(make_cfg, tmp_path, stage)
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        validate(cfg)
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, stage
        assert not Path(cfg["output"]["dir"]).exists(), stage


COUNT_CHECKS = """
import atexit, sys
from data_engine.stages.synth import Synth
calls = []
check = Synth.check
Synth.check = lambda self: (calls.append(1), check(self))[1]
atexit.register(lambda: print(f"synth section checked {len(calls)} times", file=sys.stderr))
sys.argv = ["data-engine", *sys.argv[1:]]
from data_engine.cli import main
main()
"""


def test_the_cli_checks_the_stage_section_once(tmp_path):
    out = tmp_path / "out"
    args = ["stage=synth", "synth.num_scenes=2", "synth.min_size=48", "synth.max_size=48", "runtime=serial"]
    result = subprocess.run(
        [sys.executable, "-c", COUNT_CHECKS, *args, "runtime.progress=false", f"output.dir={out}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "synth section checked 1 times" in result.stderr
    assert json.loads(result.stdout)["images"] == 2
