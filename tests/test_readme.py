"""The README's "From Python" example runs as written, in a scratch folder."""

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def from_python_code() -> str:
    """The python block of the README's "From Python" section."""
    section = README.read_text().split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_from_python_example_runs(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(compile(from_python_code(), f"{README}#from-python", "exec"), names)
    # Each step gave what its comment says
    assert names["summary"]["images_ok"] == 1 and names["summary"]["masks"] > 0
    assert names["mask"].sum() == names["row"]["area"] and names["image"].shape == (*names["mask"].shape, 3)
    assert (names["confident"]["predicted_iou"] >= 0.8).all()
    assert names["audited"].num_rows == names["summary"]["masks"] and "iou" in names["audited"].column_names
    coco = json.loads((tmp_path / "out" / "auto.json").read_text())
    assert len(coco["annotations"]) == names["summary"]["masks"] and len(coco["images"]) == 1
    assert len(names["found"]["segmentation"]) > 0
