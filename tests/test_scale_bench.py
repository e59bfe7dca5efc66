"""benchmarks/scale.py --quick runs and prints its table's rows (no timing asserted)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # about 15 s on 2 cores


def test_scale_benchmark_quick_mode_prints_every_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(tmp_path / "ray")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick", "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "      10,000       40 " in out  # the measured size: images, shards, then its figures
    assert "EXTRAPOLATED" in out and "  11,000,000 " in out
    assert "growth law" in out
    assert "  serial       1   stub " in out and "  serial       1  write " in out
    assert "shards/s" in out and "1000 GPUs" in out
    for step in ("JPEG decode", "mask rows", "Parquet write", "RLE from a GPU's run ends", "small-region clean-up"):
        assert step in out, step
    assert "cores per GPU at 7 img/s" in out
