"""Run a test file in a fresh interpreter with a Ray temp dir of its own (for tests whose Ray state must
not be shared with other modules of the same pytest process)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_test_file(path: Path, expected_passed: int, timeout: int) -> None:
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rt", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=Path(__file__).parent)
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASSED")]
    assert proc.returncode == 0 and len(passed) == expected_passed, proc.stdout[-4000:] + proc.stderr[-2000:]
