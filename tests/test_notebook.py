"""The notebook runs top to bottom on a small dataset and its audit (needs nbclient and ipykernel)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from maskdata import rect, write_coco, write_dataset

from data_engine.stages import run_stage

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_dataset_and_audit.ipynb"
H, W = 64, 80


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(make_cfg, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install nbclient ipykernel)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install ipykernel)")
    # A dataset with its images and run record, and its audit against expert masks
    images = tmp_path / "images"
    images.mkdir()
    masks = {"a.png": [rect(H, W, 0, 0, 20, 20), rect(H, W, 30, 30, 60, 70)], "b.png": [rect(H, W, 5, 5, 40, 40)]}
    for name in masks:
        cv2.imwrite(str(images / name), np.full((H, W, 3), 90, np.uint8))
    dataset = write_dataset(tmp_path / "ds", masks, (H, W))
    (dataset / "run.json").write_text(json.dumps({"input_root": str(images)}))
    write_coco(tmp_path / "expert.json", masks, (H, W))
    monkeypatch.chdir(tmp_path)  # relative paths, as typed on the command line; the notebook runs elsewhere
    run_stage(make_cfg("stage=audit", "audit.pred=ds", "audit.expert=expert.json"))
    # Run every cell against them
    monkeypatch.setenv("DATA_ENGINE_DATASET", str(dataset))
    monkeypatch.setenv("DATA_ENGINE_AUDIT", str(tmp_path / "out"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the inline backend shows the figures as outputs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # masks, scores, audit plots, worst image


def test_the_notebook_reads_the_dataset_through_the_dataset_handle():
    code = "\n".join(
        "".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"
    )
    assert "Dataset.open(DATASET)" in code and ".join_audit(AUDIT" in code
    assert not any(name in code for name in ("read_masks", "read_images", "rle.decode", "run.json", "input_root"))
