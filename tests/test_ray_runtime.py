"""Runs ray_runtime_body.py (a worker killed mid-shard on Ray Data, with and without retries) in a fresh
interpreter: a Ray Data run after a crashed worker, in a Ray session another test module used before, has
been seen to wait forever, so these tests get a process of their own."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_ray_runtime_in_a_fresh_interpreter():
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rr", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(HERE / "ray_runtime_body.py")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=HERE.parent)
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASSED")]
    assert proc.returncode == 0 and len(passed) == 2, proc.stdout[-4000:] + proc.stderr[-2000:]
