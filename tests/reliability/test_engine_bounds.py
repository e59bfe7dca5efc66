"""Engine sections that would expand to more steps than can be planned: `rounds: 1000000000`
once ran out of memory while validating. Rounds and the total number of steps are bounded before any
step is expanded."""

from __future__ import annotations

import time

import pytest
from test_damaged_inputs import assert_one_line, cli

from data_engine.engine.steps import MAX_ROUNDS, MAX_STEPS, check_references
from data_engine.errors import ConfigError

STEP = {"name": "a", "stage": "synth"}


@pytest.mark.parametrize("rounds", [MAX_ROUNDS + 1, 100_000, 1_000_000_000])
def test_rounds_above_the_bound_are_refused_at_once(rounds):
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"engine.steps\[0\].rounds: must be an integer >= 1 and <= {MAX_ROUNDS}"):
        check_references([{"rounds": rounds, "steps": [STEP]}])
    assert time.monotonic() - start < 1


def test_more_expanded_steps_than_the_bound_are_refused_before_expansion():
    inner = [{"name": f"s{k}", "stage": "synth"} for k in range(MAX_STEPS // MAX_ROUNDS + 1)]
    with pytest.raises(ConfigError, match=rf"engine.steps: expand to {MAX_STEPS + MAX_ROUNDS} steps, above the limit"):
        check_references([{"rounds": MAX_ROUNDS, "steps": inner}])


def test_the_largest_allowed_engine_validates_in_seconds():
    inner = [{"name": f"s{k}", "stage": "synth"} for k in range(MAX_STEPS // MAX_ROUNDS)]
    start = time.monotonic()
    assert len(check_references([{"rounds": MAX_ROUNDS, "steps": inner}])) == MAX_STEPS
    assert time.monotonic() - start < 10


def test_a_billion_rounds_on_the_command_line_is_one_line(tmp_path):
    steps = "engine.steps=[{rounds:1000000000,steps:[{name:a,stage:synth}]}]"
    result = cli("stage=engine", steps, f"output.dir={tmp_path / 'out'}")
    assert_one_line(result, "rounds: must be an integer >= 1 and <= 100, got 1000000000")
