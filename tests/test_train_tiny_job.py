"""jobs/train_tiny.sh, the chain that made the embedded model: every command it runs is a valid
config, and each run continues from the one before it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from data_engine.config import validate
from data_engine.schema import parse
from data_engine.stages.synth import Synth
from data_engine.train.settings import Train

SCRIPT = Path(__file__).parents[1] / "jobs" / "train_tiny.sh"


def recorded_commands(tmp_path: Path) -> list[list[str]]:
    """Run the script with a stand-in for data-engine that records its arguments."""
    record = tmp_path / "commands.jsonl"
    stand_in = tmp_path / "data-engine"
    stand_in.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stand_in.chmod(0o755)
    env = {**os.environ, "DATA_ENGINE": str(stand_in), "OUT": str(tmp_path / "out")}
    subprocess.run(["bash", str(SCRIPT)], check=True, env=env, capture_output=True)
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_the_chain_makes_the_data_then_trains_each_run_from_the_last(make_cfg, tmp_path):
    commands = recorded_commands(tmp_path)
    data = make_cfg(*commands[0], small=False)
    assert data["stage"]["name"] == "synth" and parse(Synth, data["synth"], "synth").seed == 1
    data_dir = Path(data["output"]["dir"])
    data_dir.mkdir(parents=True)
    previous = None
    for command in commands[1:]:
        cfg = make_cfg(*command, small=False)
        train = parse(Train, cfg["train"], "train")
        assert train.data == [str(data_dir)]
        if previous is None:
            assert train.init == "scratch" and not cfg["model"]["checkpoint"]
        else:
            assert train.init == "pretrained" and cfg["model"]["checkpoint"] == str(previous / "model.pt")
        validate(cfg)  # the checkpoint it names must exist: stand in for the previous run's model.pt
        previous = Path(cfg["output"]["dir"])
        previous.mkdir(parents=True)
        (previous / "model.pt").touch()
    assert len(commands) == 14 and previous.name == "train_tiny_14"
