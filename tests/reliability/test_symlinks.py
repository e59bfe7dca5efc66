"""Symlinks leaving the folder a stage reads: one rule for every stage that reads images
(io.inputs.leaves_root). stage=auto skips such links; the importers reject the annotations of such an
image with the reason, without opening it, unless input.follow_symlinks=true; release.verify refuses a tar
that is a link out of the release folder."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from data_engine.importers import import_annotations
from data_engine.importers import validate as import_checks
from data_engine.release.verify import verify_release
from data_engine.stages import run_stage

LEAVES = "symlink leaves image root"


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(path)
    return path


def linked_root(tmp_path: Path) -> Path:
    """images/: a.png, inside.png -> a.png, leak.png -> ../outside_secret.png, away/ -> ../outside_dir/ (b.png)."""
    root = tmp_path / "images"
    image(root / "a.png")
    (root / "inside.png").symlink_to(root / "a.png")
    (root / "leak.png").symlink_to(image(tmp_path / "outside_secret.png"))
    image(tmp_path / "outside_dir" / "b.png")
    (root / "away").symlink_to(tmp_path / "outside_dir", target_is_directory=True)
    return root


def coco_file(path: Path, names: list[str]) -> Path:
    """One 10x10 square annotation per image name."""
    images = [{"id": i, "file_name": n, "height": 40, "width": 50} for i, n in enumerate(names, 1)]
    square = [[5, 5, 15, 5, 15, 15, 5, 15]]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "segmentation": square} for i in range(1, len(names) + 1)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))
    return path


NAMES = ["a.png", "inside.png", "leak.png", "away/b.png"]


def outcomes(report: list[dict]) -> dict[str, str]:
    return {r["image"]: "imported" if r["status"] == "imported" else r["reason"] for r in report}


def test_importers_reject_an_image_linked_from_outside_the_root_without_opening_it(tmp_path, monkeypatch):
    root = linked_root(tmp_path)
    opened = []
    real = import_checks.images.image_size
    monkeypatch.setattr(import_checks.images, "image_size", lambda p: opened.append(Path(p).name) or real(p))
    rows, report = import_annotations("coco", str(coco_file(tmp_path / "coco.json", NAMES)), str(root))
    found = outcomes(report)
    assert found["a.png"] == found["inside.png"] == "imported" and len(rows) == 2
    for name in ("leak.png", "away/b.png"):
        assert found[name] == (
            f"{LEAVES}: {name} is a symlink to a path outside the image root (input.follow_symlinks=true follows it)"
        )
    assert "leak.png" not in opened and "b.png" not in opened


def test_importers_follow_the_links_with_follow_symlinks(tmp_path):
    root = linked_root(tmp_path)
    rows, report = import_annotations("coco", str(coco_file(tmp_path / "coco.json", NAMES)), str(root), None, True)
    assert set(outcomes(report).values()) == {"imported"} and len(rows) == 4


def test_stage_assisted_reports_the_link_and_follows_it_only_when_asked(make_cfg, tmp_path):
    root = linked_root(tmp_path)
    annotations = coco_file(tmp_path / "coco.json", ["a.png", "leak.png"])
    args = ["stage=assisted", f"assisted.annotations={annotations}", f"assisted.image_root={root}"]
    summary = run_stage(make_cfg(*args))
    assert summary["import"]["imported"] == 1 and summary["import"]["rejected_by_reason"] == {LEAVES: 1}
    report = pq.read_table(tmp_path / "out" / "import_report.parquet").to_pylist()
    assert outcomes(report)["leak.png"].startswith(f"{LEAVES}: leak.png")
    summary = run_stage(make_cfg(*args, "input.follow_symlinks=true", "output.overwrite=true"))
    assert summary["import"]["imported"] == 2


def empty_release_tar(path: Path) -> dict:
    """A tar with no member, and its manifest entry."""
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    path.write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    return {"file": path.name, "sha256": digest, "bytes": len(buffer.getvalue()), "images": 0, "masks": 0}


def test_release_verify_refuses_a_tar_that_links_out_of_the_release_folder(tmp_path):
    entry = empty_release_tar(tmp_path / "sa_000000.tar")
    release = tmp_path / "release"
    release.mkdir()
    (release / "manifest.json").write_text(json.dumps({"tars": [entry], "images": 0, "masks": 0}))
    (release / "sa_000000.tar").symlink_to(tmp_path / "sa_000000.tar")
    report = verify_release(release)
    assert report["problems"] == [
        "sa_000000.tar is a symlink to a path outside the release folder; a release holds its own tars"
    ]
    assert "INVALID, 1 problem(s)" in report["verdict"] and "\n" not in report["verdict"]
    (release / "sa_000000.tar").unlink()
    (tmp_path / "sa_000000.tar").rename(release / "sa_000000.tar")
    assert verify_release(release)["problems"] == []  # the same tar inside the folder passes
