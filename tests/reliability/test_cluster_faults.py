"""Runs cluster_faults.py (a multi-node Ray cluster made in the test, a node removed mid-run, a hung
worker, an unplaceable worker, a stale advertised cluster) in a fresh interpreter with its own Ray temp dir."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_cluster_faults_in_a_fresh_interpreter():
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rt", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(HERE / "cluster_faults.py")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=HERE.parents[1])
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASSED")]
    assert proc.returncode == 0 and len(passed) == 5, proc.stdout[-4000:] + proc.stderr[-2000:]
