"""Hostile input: crafted annotations, decompression bombs, XML entity attacks, pickles.

Every crafted file is read in a subprocess under a memory limit, so a regression (a crash in the
rasteriser, a 10 GB allocation) fails its test instead of taking the machine down. Each import
must report every annotation: the good ones imported, each hostile one imported (cut to the image)
or rejected with its reason.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data_engine

LIMIT_MB = 1536  # importing the importers takes about 300 MB of address space
REPO = Path(data_engine.__file__).resolve().parents[1]
LIMITED = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit} << 20, {limit} << 20))
args = json.loads(sys.argv[1])
"""
IMPORT = """
from data_engine.importers import import_annotations
rows, report = import_annotations(args["fmt"], args["path"], args["root"])
kinds = [(r["annotation"], r["status"] if r["status"] == "imported" else r["reason"]) for r in report]
print(json.dumps({"rows": len(rows), "report": kinds}))
"""


def run_limited(code: str, **args) -> dict:
    """The JSON the code prints last, run in a fresh interpreter limited to LIMIT_MB of memory."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = LIMITED.format(limit=LIMIT_MB) + code
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, f"the import died (exit {proc.returncode}): {proc.stderr[-1500:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_limited(fmt: str, path: Path, root: Path | None) -> dict[str, str]:
    """annotation key -> 'imported' or its rejection reason; the report covers every annotation."""
    found = run_limited(IMPORT, fmt=fmt, path=str(path), root=str(root) if root else None)
    report = dict(found["report"])
    assert len(report) == len(found["report"]), "annotation keys repeat"
    assert found["rows"] == sum(v == "imported" for v in report.values())
    return report


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header claims width x height grey pixels (a few rows of data)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


@pytest.fixture
def root(tmp_path):
    """An image root: a.png (80x64), and bombs claiming 12000x12000 (under Pillow's own limit) and 50000x50000."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((64, 80, 3), 120, np.uint8)).save(folder / "a.png")
    (folder / "bomb12k.png").write_bytes(bomb_png(12000, 12000))
    (folder / "bomb50k.png").write_bytes(bomb_png(50000, 50000))
    return folder


def kind(reason: str) -> str:
    return reason.split(":")[0]


# One annotation must not end an import


def test_coco_hostile_coordinates_and_rle_sizes_reject_only_themselves(root, tmp_path):
    square = [10, 10, 40, 10, 40, 40, 10, 40]
    turns = np.arange(2000) * 2 * np.pi * 999 / 2000  # a star: 2000 edges of about 1200 pixels each
    star = np.stack([40 + 600 * np.cos(turns), 32 + 600 * np.sin(turns)], axis=1).ravel().tolist()
    segmentations = {
        "good": [square],
        "far 1e8": [[10, 10, 1e8, 10, 1e8, 40, 10, 40]],
        "far 1e12": [[10, 10, 1e12, 10, 1e12, 1e12, 10, 40]],
        "beyond -1e12": [[-1e12, -1e12, -1e12 + 1e6, -1e12, -1e12, -1e12 + 1e6]],
        "huge int": [[10, 10, 10**400, 10, 40, 40]],
        "outline too long": [star],
        "size strings": {"size": ["a", "b"], "counts": [5120]},
        "size nulls": {"size": [None, None], "counts": [5120]},
        "size inf": {"size": [float("inf"), 1], "counts": [5120]},
        "size objects": {"size": [{}, []], "counts": [5120]},
        "good rle": {"size": [64, 80], "counts": [100, 200, 4820]},
    }
    doc = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 64, "width": 80},
            {"id": 2, "file_name": "a.png", "height": 10**400, "width": 80},
            {"id": 3, "file_name": "bomb12k.png", "height": 12000, "width": 12000},
            {"id": 4, "file_name": "bomb50k.png", "height": 50000, "width": 50000},
        ],
        "annotations": [{"id": k, "image_id": 1, "segmentation": s} for k, s in segmentations.items()]
        + [
            {"id": "declared 10**400", "image_id": 2, "segmentation": [square]},
            {"id": "on bomb12k", "image_id": 3, "segmentation": [square]},
            {"id": "on bomb50k", "image_id": 4, "segmentation": [square]},
        ],
    }
    (tmp_path / "hostile.json").write_text(json.dumps(doc))  # inf is written as Infinity
    got = import_limited("coco", tmp_path / "hostile.json", root)
    assert {k: kind(v) for k, v in got.items() if v != "imported"} == {
        "beyond -1e12": "outside image",
        "huge int": "degenerate polygon",
        "outline too long": "bad polygon",
        "size strings": "bad RLE",
        "size nulls": "bad RLE",
        "size inf": "bad RLE",
        "size objects": "bad RLE",
        "declared 10**400": "bad image size",
        "on bomb12k": "image too large",
        "on bomb50k": "unreadable image",
    }
    assert "decompression-bomb limit" in got["on bomb50k"]
    assert {k for k, v in got.items() if v == "imported"} == {"good", "far 1e8", "far 1e12", "good rle"}


def test_far_coordinates_give_the_mask_of_the_part_inside_the_image():
    found = run_limited(
        """
from data_engine.importers.validate import polygons_to_counts
from data_engine.io import rle
out = {}
for far in (1e8, 1e12):
    counts, notes = polygons_to_counts([[10, 10, far, 10, far, 40, 10, 40]], 64, 80)
    mask = rle.decode(counts, 64, 80)
    out[far] = [bool(mask[10:40, 10:].all()), int(mask.sum()), notes]
print(json.dumps(out))
"""
    )
    assert list(found.values()) == [[True, 30 * 70, ["clipped: polygon reaches outside the image"]]] * 2


CVAT = """<annotations><version>1.1</version>
<image id="0" name="a.png" width="80" height="64">
  <polygon label="good" points="10,10;40,10;40,40;10,40"/>
  <polygon label="far" points="10,10;1e12,10;1e12,40;10,40"/>
  <polygon label="nan" points="nan,10;40,10;40,40"/>
  <ellipse label="huge ellipse" cx="40" cy="30" rx="1e8" ry="1e8"/>
  <mask label="good mask" left="2" top="3" width="4" height="2" rle="1, 6, 1"/>
  <mask label="10 GB mask" left="0" top="0" width="100000" height="100000" rle="0, 10000000000"/>
  <mask label="200 MB mask" left="0" top="0" width="20000" height="10000" rle="0, 200000000"/>
  <mask label="inf mask" left="0" top="0" width="inf" height="2" rle="0, 4"/>
  <box label="inf box" xtl="1" ytl="1" xbr="inf" ybr="5"/>
</image></annotations>"""


def test_cvat_hostile_shapes_reject_only_themselves(root, tmp_path):
    (tmp_path / "annotations.xml").write_text(CVAT)
    got = import_limited("cvat_xml", tmp_path / "annotations.xml", root)
    outcome = [kind(v) for v in got.values()]
    assert outcome == [
        "imported",
        "imported",
        "degenerate polygon",
        "imported",
        "imported",
        "bad mask",
        "bad mask",
        "bad mask",
        "degenerate box",
    ]


def test_labelme_hostile_shapes_reject_only_themselves(root, tmp_path):
    bomb, bomb12k = (base64.b64encode(bomb_png(n, n)).decode() for n in (50000, 12000))
    shapes = [
        {"shape_type": "polygon", "points": [[10, 10], [40, 10], [40, 40]]},
        {"shape_type": "circle", "points": [[40, 30], [40 + 1e8, 30]]},
        {"shape_type": "circle", "points": [[40, 30], ["a", 30]]},
        {"shape_type": "rectangle", "points": [[10, 10], [1e12, 1e12]]},
        {"shape_type": "mask", "points": [[0, 0], [6, 6]], "mask": bomb12k},
        {"shape_type": "mask", "points": [[0, 0], [float("inf"), 6]], "mask": bomb},
        {"shape_type": "mask", "points": [[0, 0], [1e9, 1e9]], "mask": bomb},
    ]
    doc = {"imagePath": "a.png", "imageHeight": 64, "imageWidth": 80, "shapes": shapes}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    got = import_limited("labelme", tmp_path / "a.json", root)
    assert [kind(v) for v in got.values()] == [
        "imported",
        "imported",
        "degenerate circle",
        "imported",
        "bad mask",
        "degenerate mask",
        "bad mask",
    ]
    assert "the mask is 12000x12000, it should be 7x7" in got["shapes[4]"]


def test_labelstudio_hostile_values_reject_only_themselves(root, tmp_path):
    def region(rid, kind_, value):
        return {"id": rid, "type": kind_, "original_width": 80, "original_height": 64, "value": value}

    task = {
        "id": 1,
        "data": {"image": "a.png"},
        "annotations": [
            {
                "id": 1,
                "result": [
                    region("good", "rectanglelabels", {"x": 10, "y": 10, "width": 20, "height": 20}),
                    region("far", "polygonlabels", {"points": [[10, 10], [1e12, 10], [1e12, 1e12], [10, 50]]}),
                    region("huge int", "rectanglelabels", {"x": 10**400, "y": 10, "width": 20, "height": 20}),
                    region("size", "rectanglelabels", {"x": 10, "y": 10, "width": 20, "height": 20}),
                ],
            }
        ],
    }
    task["annotations"][0]["result"][3]["original_width"] = [{}]
    (tmp_path / "export.json").write_text(json.dumps([task]))
    got = import_limited("labelstudio", tmp_path / "export.json", root)
    assert [kind(v) for v in got.values()] == ["imported", "imported", "bad annotation", "bad image size"]


# Decompression bombs are refused from their header


@pytest.mark.parametrize("fmt", ["png_masks", "png_labels"])
def test_png_mask_bombs_are_refused_before_decoding(root, tmp_path, fmt):
    masks = tmp_path / "masks"
    (masks / "a").mkdir(parents=True)
    good = np.zeros((64, 80), np.uint8)
    good[5:20, 5:30] = 1
    if fmt == "png_masks":
        Image.fromarray(good * 255).save(masks / "a" / "0.png")
        (masks / "a" / "1.png").write_bytes(bomb_png(50000, 50000))
        (masks / "a" / "2.png").write_bytes(bomb_png(12000, 12000))
    else:
        Image.fromarray(good).save(masks / "a.png")
        (masks / "bomb12k.png").write_bytes(bomb_png(12000, 12000))
    with_root = import_limited(fmt, masks, root)
    without_root = import_limited(fmt, masks, None)
    if fmt == "png_masks":
        assert [kind(v) for v in with_root.values()] == ["imported", "unreadable mask", "size mismatch"]
        assert "decompression-bomb limit" in with_root["a/1.png"]
        assert [kind(v) for v in without_root.values()] == ["imported", "unreadable mask", "image too large"]
    else:
        assert [kind(v) for v in with_root.values()] == ["imported", "image too large"]
        assert [kind(v) for v in without_root.values()] == ["imported", "image too large"]


def test_image_bombs_are_refused_by_load_rgb_from_their_header(root):
    found = run_limited(
        """
from data_engine.io.images import ImageError, load_rgb
out = {}
for name, limit in (("bomb12k.png", 50_000_000), ("bomb50k.png", 1 << 62)):
    try:
        load_rgb(args["root"] + "/" + name, limit)
        out[name] = "loaded"
    except ImageError as err:
        out[name] = str(err)
print(json.dumps(out))
""",
        root=str(root),
    )
    assert "above input.max_pixels=50000000" in found["bomb12k.png"]
    assert "decompression-bomb limit" in found["bomb50k.png"]


def test_orientation_in_a_trailing_png_exif_chunk_is_read_without_decoding(tmp_path):
    from data_engine.io.images import image_size, load_rgb

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: stored 30 wide, 20 high; loaded 20 wide, 30 high
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png", exif=exif.tobytes())
    data = (tmp_path / "a.png").read_bytes()
    start = data.index(b"eXIf") - 4
    end = start + 12 + struct.unpack(">I", data[start : start + 4])[0]
    iend = data.index(b"IEND") - 4
    (tmp_path / "a.png").write_bytes(data[:start] + data[end:iend] + data[start:end] + data[iend:])  # eXIf after IDAT
    assert image_size(tmp_path / "a.png") == ((30, 20), (20, 30))
    assert load_rgb(tmp_path / "a.png", 10**6).shape == (30, 20, 3)


# Cases that already held: keep them holding


def test_xml_entity_attacks_are_refused(tmp_path):
    laughs = "".join(f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10))
    billion = f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l0 "lol">{laughs}]><annotations>&l9;</annotations>'
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    external = (
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<annotations><image id="0" name="a.png" width="80" height="64">'
        '<polygon label="&x;" points="1,1;5,1;5,5"/></image></annotations>'
    )
    for name, text in (("billion.xml", billion), ("external.xml", external)):
        (tmp_path / name).write_text(text)
        found = run_limited(
            """
from data_engine.importers import import_annotations
from data_engine.io.inputs import InputError
try:
    rows, _ = import_annotations("cvat_xml", args["path"])
    print(json.dumps({"labels": [r["extra"] for r in rows]}))
except InputError as err:
    print(json.dumps({"error": str(err)}))
""",
            path=str(tmp_path / name),
        )
        assert "SECRET" not in json.dumps(found)
        assert "not a readable CVAT XML export" in found.get("error", ""), found
