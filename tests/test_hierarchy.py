"""Masks' hierarchy (io/hierarchy.py): parents and depths on drawn nesting and on synthetic scenes, carried
by the exports, and the audit restricted to depth 0."""

import json

import numpy as np
import pytest
from maskdata import rect, write_dataset

from data_engine.exports.formats import export, read_sa1b
from data_engine.io import rle
from data_engine.io.dataset import read_masks
from data_engine.io.hierarchy import containment, parents
from data_engine.stages import run_stage

H, W = 100, 120

# name: (mask, expected parent name, expected depth); listed children before parents on purpose
DRAWN = {
    "subpart": (rect(H, W, 25, 25, 35, 35), "part", 2),
    "part": (rect(H, W, 20, 20, 50, 50), "whole", 1),
    "whole": (rect(H, W, 10, 10, 90, 90), None, 0),
    "part2": (rect(H, W, 60, 60, 80, 80), "whole", 1),
    # 100 of its 120 px in `part` (0.83 < 0.9): its parent is the whole, which holds all of it
    "mostly_in_part": (rect(H, W, 30, 40, 40, 52), "whole", 1),
    # 5 of 14 columns inside the whole: no parent
    "straddler": (rect(H, W, 40, 85, 60, 99), None, 0),
    # two identical masks: the first listed is the parent of the second
    "twin_a": (rect(H, W, 92, 100, 99, 118), None, 0),
    "twin_b": (rect(H, W, 92, 100, 99, 118), "twin_a", 1),
}


def test_drawn_nesting_gives_known_parents_and_depths():
    names = list(DRAWN)
    masks = np.stack([DRAWN[n][0] for n in names])
    counts = rle.encode(masks)
    found, depths = parents(counts, masks.sum((1, 2)), H, W)
    assert {n: None if p is None else names[p] for n, p in zip(names, found)} == {n: v[1] for n, v in DRAWN.items()}
    assert dict(zip(names, depths)) == {n: v[2] for n, v in DRAWN.items()}


def test_containment_is_the_share_inside_and_decodes_nothing_wrong():
    masks = np.stack([DRAWN["mostly_in_part"][0], DRAWN["part"][0], np.zeros((H, W), bool)])
    share = containment(rle.encode(masks), H, W)
    assert share[0, 1] == pytest.approx(100 / 120) and share[1, 0] == pytest.approx(100 / 900)
    assert share[2].tolist() == [0, 0, 0]  # an empty mask is inside nothing (and no NaN)


def test_threshold_share_is_inclusive():
    inner, outer = rect(H, W, 0, 0, 10, 10), rect(H, W, 0, 1, 10, 30)  # 90 of inner's 100 px inside outer
    found, depths = parents(rle.encode(np.stack([inner, outer])), [100, 290], H, W)
    assert found == [1, None] and depths == [1, 0]
    found, _ = parents(rle.encode(np.stack([inner, outer])), [100, 290], H, W, share=0.91)
    assert found == [None, None]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from data_engine.config import compose

    out = tmp_path_factory.mktemp("synth") / "out"
    run_stage(compose(["stage=synth", "synth.num_scenes=6", "runtime=serial", f"output.dir={out}"]))
    return out


def test_synthetic_scenes_nesting_is_found(synth_dir):
    """Every mask's parent is the whole it is a part of (a subpart: its part), as the scenes drew them."""
    rows = read_masks(synth_dir).to_pylist()
    by_annotation = {json.loads(r["extra"])["id"]: r for r in rows}
    nested = 0
    for r in rows:
        part_of = json.loads(r["extra"])["part_of"]
        expected_parent = None if part_of is None else by_annotation[part_of]["mask_id"]
        assert r["parent_mask_id"] == expected_parent, r["file_name"]
        depth, up = 0, part_of
        while up is not None:
            depth, up = depth + 1, json.loads(by_annotation[up]["extra"])["part_of"]
        assert r["depth"] == depth
        nested += part_of is not None
    assert nested >= 5 and max(r["depth"] for r in rows) >= 2  # the scenes do have parts and subparts


def test_exports_carry_the_hierarchy(tmp_path):
    ds = write_dataset(tmp_path / "ds", {"a.png": [DRAWN["whole"][0], DRAWN["part"][0]]}, (H, W))
    rows = {r["mask_id"]: r for r in read_masks(ds).to_pylist()}
    export(ds, tmp_path / "out", "coco")
    anns = json.loads((tmp_path / "out" / "coco" / "instances.json").read_text())["annotations"]
    assert {a["id"]: (a["parent_mask_id"], a["depth"]) for a in anns} == {
        i: (r["parent_mask_id"], r["depth"]) for i, r in rows.items()
    }
    assert sorted(a["depth"] for a in anns) == [0, 1]
    export(ds, tmp_path / "out", "sa1b")
    _, back = read_sa1b(tmp_path / "out" / "sa1b")
    assert {r["mask_id"]: (r["parent_mask_id"], r["depth"]) for r in back} == {
        i: (r["parent_mask_id"], r["depth"]) for i, r in rows.items()
    }


def test_audit_restricted_to_depth_0(synth_dir, make_cfg):
    rows = read_masks(synth_dir, ["depth"]).column("depth").to_pylist()
    for max_depth, expected in ((None, len(rows)), (0, rows.count(0))):
        cfg = make_cfg("stage=audit", f"audit.pred={synth_dir}", f"audit.expert={synth_dir}", "audit.worst_k=0")
        cfg["audit"]["max_depth"] = max_depth
        summary = run_stage(cfg)
        assert summary["expert_masks"] == summary["pred_masks"] == expected
        assert summary["recall@0.9"] == 1.0
    assert rows.count(0) < len(rows)
