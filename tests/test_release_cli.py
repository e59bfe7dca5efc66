"""The release end to end through the CLI: the automatic stage on a folder holding a photo above 1500 px
and a photo with a face, released with the default settings, verified, released again byte for byte."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_engine.io.inputs import image_id

skimage_data = pytest.importorskip("skimage.data")

AUTO = ["amg=tiny", "amg.points_per_side=4", "amg.crop_n_layers=0", "model.device=cpu", "output.overlays=0"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_engine", "runtime.progress=false", *args], capture_output=True, text=True
    )


def digests(folder: Path) -> dict[str, str]:
    paths = [*folder.glob("sa_*.tar"), folder / "manifest.json", *(folder / "blur").glob("*.json")]
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def laplacian_var(image: np.ndarray, box) -> float:
    x, y, w, h = box
    lap = cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F)
    return float(lap[y + 4 : y + h - 4, x + 4 : x + w - 4].var())


@pytest.mark.slow
def test_auto_output_releases_verifies_and_reruns_identically(tmp_path):
    # A photo with a face (512 px) and the same photo upscaled above 1500 px
    photo = skimage_data.astronaut()
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "face.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    big = cv2.resize(photo, (1800, 1700), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(images / "big.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    auto, rel = tmp_path / "auto", tmp_path / "rel"
    run = cli("stage=auto", f"input.path={images}", f"output.dir={auto}", "runtime=serial", *AUTO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["masks"] > 0

    # Release with the defaults (Ray, local), then verify
    run = cli("stage=release", f"release.data=[{auto}]", f"output.dir={rel}")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert (rel / "sa_000000.tar").is_file() and (rel / "manifest.json").is_file()
    assert summary["images"] == 2 and summary["images_downsampled"] == 1 and summary["boxes_by_kind"]["face"] >= 1
    check = cli("stage=release", f"release.verify={rel}")
    assert check.returncode == 0, check.stderr[-2000:]
    assert "ok (1 tars, 2 images" in json.loads(check.stdout)["verdict"]

    # The big photo is released at 1500 px; its masks have that size; the face is blurred
    with tarfile.open(rel / "sa_000000.tar") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    big_doc = json.loads(files[f"sa_{image_id('big.png')}.json"])
    assert (big_doc["image"]["height"], big_doc["image"]["width"]) == (1500, 1588)
    assert all(a["segmentation"]["size"] == [1500, 1588] for a in big_doc["annotations"])
    face_id = image_id("face.png")
    sidecar = json.loads((rel / "blur" / "sa_000000.json").read_text())
    face_box = next(b["box"] for b in sidecar["boxes"] if b["image_id"] == face_id and b["kind"] == "face")
    jpeg = cv2.cvtColor(cv2.imdecode(np.frombuffer(files[f"sa_{face_id}.jpg"], np.uint8), 1), cv2.COLOR_BGR2RGB)
    assert laplacian_var(jpeg, face_box) < 0.2 * laplacian_var(photo, face_box)

    # A rerun into a fresh folder changes no byte; a rerun in place has nothing to do and changes nothing
    before = digests(rel)
    again = cli("stage=release", f"release.data=[{auto}]", f"output.dir={tmp_path / 'again'}", "runtime=serial")
    assert again.returncode == 0, again.stderr[-2000:]
    assert digests(tmp_path / "again") == before
    rerun = cli("stage=release", f"release.data=[{auto}]", f"output.dir={rel}")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert digests(rel) == before

    # One changed byte: the verifier says so on one line and exits 2
    tar = rel / "sa_000000.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0x01
    tar.write_bytes(bytes(data))
    check = cli("stage=release", f"release.verify={rel}")
    assert check.returncode == 2
    assert check.stderr.strip().splitlines()[-1].startswith(f"data-engine: error: release {rel}: INVALID")
