"""Runs cluster_faults.py (a multi-node Ray cluster made in the test, a node removed mid-run, a hung
worker, an unplaceable worker, a stale advertised cluster) in a fresh interpreter with its own Ray temp dir."""

from pathlib import Path

import pytest
from fresh_process import run_test_file


@pytest.mark.slow
def test_cluster_faults_in_a_fresh_interpreter():
    run_test_file(Path(__file__).parent / "cluster_faults.py", expected_passed=5, timeout=900)
