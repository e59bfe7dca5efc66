"""Runs ray_runtime_body.py (a worker killed mid-shard on Ray Data, with and without retries) in a fresh
interpreter: a Ray Data run after a crashed worker, in a Ray session another test module used before, has
been seen to wait forever, so these tests get a process of their own."""

from pathlib import Path

import pytest
from fresh_process import run_test_file


@pytest.mark.slow
def test_ray_runtime_in_a_fresh_interpreter():
    run_test_file(Path(__file__).parent / "ray_runtime_body.py", expected_passed=2, timeout=600)
