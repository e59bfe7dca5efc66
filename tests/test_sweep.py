"""stage=sweep on a pilot's candidates: the pilot's own settings give its masks exactly; a grid with an
expert set writes its table and page, with the audit's figures; a pilot with a verifier scores its
candidates and the sweep filters on the scores; settings it cannot honour are refused."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import compose_cfg
from test_verifier import scripted_verifier

from data_engine.amg import candidates
from data_engine.amg.generator import MaskGenerator
from data_engine.errors import ConfigError
from data_engine.io.dataset import read_images, read_masks, shard_files
from data_engine.model.build import build_sam
from data_engine.stages import run_stage
from data_engine.synth.scenes import make_scene

# The pilot: crops, clean-up and thresholds above the candidate floors (0.5, 0.5), two shards
PILOT = [
    "amg.keep_candidates=true",
    "amg.crop_n_layers=1",
    "amg.min_mask_region_area=30",
    "amg.pred_iou_thresh=0.6",
    "amg.stability_score_thresh=0.8",
    "input.shard_size=2",
]


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    """Synthetic scenes (their exact masks: the expert set) and a pilot run on their pictures."""
    root = tmp_path_factory.mktemp("sweep")
    synth = root / "synth"
    run_stage(
        compose_cfg(
            ["stage=synth", "synth.num_scenes=3", "synth.min_size=96", "synth.max_size=128"] + [f"output.dir={synth}"]
        )
    )
    cfg = compose_cfg(PILOT + [f"input.path={synth / 'pictures'}", f"output.dir={root / 'pilot'}"])
    run_stage(cfg)
    return root, synth, root / "pilot"


def sweep(root, name, *overrides):
    cfg = compose_cfg(["stage=sweep", f"sweep.pilot={root / 'pilot'}", f"output.dir={root / name}", *overrides])
    return cfg, run_stage(cfg)


def test_pilot_writes_candidates_per_shard(pilot):
    _, _, out = pilot
    files = shard_files(out, "candidates")
    assert [p.stem for p in files] == [p.stem for p in shard_files(out, "masks")] and len(files) == 2
    done = [json.loads(p.read_text()) for p in shard_files(out, "_done", ".json")]
    masks = read_masks(out).num_rows
    assert sum(d["candidates"] for d in done) > masks > 0  # more candidates than kept masks


def test_sweep_at_the_pilots_settings_reproduces_every_mask(pilot):
    root, _, out = pilot
    cfg, summary = sweep(root, "same")
    assert summary["masks"] == read_masks(out).num_rows
    ours, theirs = read_masks(cfg["output"]["dir"]).to_pylist(), read_masks(out).to_pylist()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):  # every column of every mask, in order; only the source says "sweep"
        assert a.pop("source") == "sweep" and b.pop("source") == "auto"
        assert a == b
    keep = ["image_id", "file_name", "height", "width", "status", "num_masks"]
    assert read_images(cfg["output"]["dir"], keep).to_pylist() == read_images(out, keep).to_pylist()


def test_keeping_candidates_leaves_the_generators_masks_unchanged():
    sam = build_sam("tiny", device="cpu")
    image = make_scene(0, 1, 96, 128)["image"]
    settings = dict(points_per_side=8, crop_n_layers=1, min_mask_region_area=30, pred_iou_thresh=0.6)
    plain = MaskGenerator(sam, **settings).generate(image)
    kept = MaskGenerator(sam, keep_candidates=True, **settings).generate(image)
    found = kept.pop("candidates")
    assert kept == plain and len(found["segmentation"]) > len(plain["segmentation"])


def test_grid_with_an_expert_set_writes_table_and_page(pilot):
    root, synth, _ = pilot
    axes = ["sweep.pred_iou_thresh=[0.5,0.6,0.8]", "sweep.box_nms_thresh=[0.5,0.7]", "sweep.mask_nms_thresh=[null,0.8]"]
    cfg, summary = sweep(root, "grid", *axes, f"sweep.expert={synth}", "sweep.recall_target=0.0")
    doc = json.loads((root / "grid" / "sweep.json").read_text())
    assert summary["points"] == len(doc["points"]) == 12
    page = (root / "grid" / "sweep.html").read_text()
    assert page.count("<tr>") == 12 + 1 + len(doc["settings"]) + 1 and "data:image/png;base64" in page
    # the named point has the fewest masks per image (every point reaches a target of 0)
    fewest = min(p["masks_per_image"] for p in doc["points"])
    assert doc["points"][doc["best"]]["masks_per_image"] == fewest and summary["best"] == doc["points"][doc["best"]]
    assert not (root / "grid" / "masks").exists()
    # a grid point's figures are the audit's on that setting's masks
    point = next(
        p for p in doc["points"] if (p["pred_iou_thresh"], p["box_nms_thresh"], p["mask_nms_thresh"]) == (0.6, 0.7, 0.8)
    )
    one, _ = sweep(root, "one", "sweep.pred_iou_thresh=0.6", "sweep.box_nms_thresh=0.7", "sweep.mask_nms_thresh=[0.8]")
    audit = run_stage(
        compose_cfg(
            ["stage=audit", f"audit.pred={root / 'one'}", f"audit.expert={synth}", "audit.worst_k=0"]
            + [f"output.dir={root / 'audit'}"]
        )
    )
    for key in ("recall@0.5", "recall@0.75", "frac_iou_above_0.90", "pred_masks", "expert_masks"):
        assert point[key] == pytest.approx(audit[key]), key
    assert point["masks_per_image"] * 3 == audit["pred_masks"]
    # mask NMS removes near-duplicates: none left at its threshold's counting IoU
    plain = next(p for p in doc["points"] if p["mask_nms_thresh"] is None and p["box_nms_thresh"] == 0.7)
    assert point["masks_per_image"] <= plain["masks_per_image"]


def test_depth_0_audit_counts_only_whole_objects(pilot):
    root, synth, _ = pilot
    _, summary = sweep(root, "depth", f"sweep.expert={synth}", "sweep.max_depth=0", "sweep.recall_target=0.0")
    depths = read_masks(synth, ["depth"]).column("depth").to_numpy()
    assert summary["best"]["expert_masks"] == int(np.sum(depths == 0)) < len(depths)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["sweep.pred_iou_thresh=0.3"], "sweep.pred_iou_thresh"),  # under the pilot's candidate floor 0.5
        (["sweep.stability_score_thresh=[0.9,0.2]"], "sweep.stability_score_thresh"),
        (["sweep.pred_iou_thresh=[0.6,null]"], "sweep.pred_iou_thresh"),
        (["sweep.box_nms_thresh=1.5"], "sweep.box_nms_thresh"),
        (["sweep.min_mask_region_area=[10,-1]"], "sweep.min_mask_region_area"),
        (["sweep.recall_at=0.6"], "sweep.recall_at"),
        (["sweep.box_nms_thresh=[]"], "sweep.box_nms_thresh"),
        (["sweep.mask_nms_thresh=[null,1.5]"], "sweep.mask_nms_thresh"),
        (["sweep.verifier_thresh=[null,1.5]"], "sweep.verifier_thresh"),
        (["sweep.verifier_thresh=0.5"], "sweep.verifier_thresh"),  # the pilot's candidates have no scores
    ],
)
def test_settings_it_cannot_honour_are_refused(pilot, overrides, key):
    root, _, _ = pilot
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ":") as err:
        sweep(root, "refused", *overrides)
    assert "\n" not in str(err.value)


def test_a_pilot_without_candidates_is_refused(pilot):
    root, synth, _ = pilot
    cfg = compose_cfg(["stage=sweep", f"sweep.pilot={synth}", f"output.dir={root / 'nope'}"])
    with pytest.raises(Exception, match="sweep.pilot"):
        run_stage(cfg)


def test_a_damaged_candidates_file_is_one_line_naming_it(pilot, tmp_path):
    root, _, out = pilot
    copy = tmp_path / "pilot"
    shutil.copytree(out, copy)
    damaged = shard_files(copy, "candidates")[0]
    damaged.write_bytes(b"not parquet")
    cfg = compose_cfg(["stage=sweep", f"sweep.pilot={copy}", f"output.dir={tmp_path / 'out'}", "runtime=serial"])
    with pytest.raises(candidates.CandidatesError, match=f"^sweep.pilot: candidates file {damaged} cannot be read"):
        run_stage(cfg)


# ----------------------------------------------------------------------------------------------
# Verifier scores
# ----------------------------------------------------------------------------------------------

CENTER = 0.75  # the scripted verifier's score: sigmoid(10 * (predicted_iou - CENTER))


@pytest.fixture(scope="module")
def scored(pilot):
    """A pilot with a scripted verifier on the same scenes, no crops, one shard."""
    root, synth, _ = pilot
    checkpoint = scripted_verifier(root / "verifier.pt", CENTER)
    settings = ["amg.keep_candidates=true", "amg.min_mask_region_area=30", "amg.pred_iou_thresh=0.6"]
    out = root / "scored"
    run_stage(
        compose_cfg(
            settings + [f"verifier.checkpoint={checkpoint}", f"input.path={synth / 'pictures'}", f"output.dir={out}"]
        )
    )
    return root, out


def key(row: dict) -> tuple:
    """A mask or candidate by its image, pixels and predicted IoU (prompts may give the same pixels)."""
    return row["image_id"], row["segmentation"], row["predicted_iou"]


def scored_sweep(root, name, *overrides):
    cfg = compose_cfg(["stage=sweep", f"sweep.pilot={root / 'scored'}", f"output.dir={root / name}", *overrides])
    return cfg, run_stage(cfg)


def test_a_pilot_with_a_verifier_scores_its_candidates_before_the_clean_up(pilot, scored):
    _, out = scored
    found = pq.read_table(shard_files(out, "candidates")[0]).to_pylist()
    assert len(found) > 0 and all(r["verifier_score"] is not None for r in found)
    expected = [1 / (1 + np.exp(-10 * (r["predicted_iou"] - CENTER))) for r in found]
    assert np.allclose([r["verifier_score"] for r in found], expected, atol=1e-5)
    # A mask the clean-up left as it was has its candidate's score
    by_mask = {key(r): r["verifier_score"] for r in found}
    same = [m for m in read_masks(out).to_pylist() if key(m) in by_mask]
    assert 0 < len(same) and all(m["verifier_score"] == by_mask[key(m)] for m in same)
    # Without a verifier, null scores
    unscored = pq.read_table(shard_files(pilot[2], "candidates")[0])
    assert unscored.column("verifier_score").null_count == unscored.num_rows


def test_candidates_written_before_the_score_column_read_with_it_null(pilot, tmp_path):
    _, _, out = pilot
    old = tmp_path / "old"
    src = shard_files(out, "candidates")[0]
    path = old / src.relative_to(out)
    path.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(src).drop_columns(["verifier_score"]), path)
    shard_id = src.stem
    table = candidates.read(old, shard_id)
    assert table.schema == candidates.SCHEMA and table.column("verifier_score").null_count == table.num_rows > 0
    assert not candidates.has_scores(old, [shard_id]) and candidates.has_scores(out, [shard_id])


def test_sweep_filters_on_verifier_scores(scored):
    root, out = scored
    pilot_masks = read_masks(out).to_pylist()
    threshold = float(np.median([m["verifier_score"] for m in pilot_masks]))
    _, summary = scored_sweep(root, "vgrid", f"sweep.verifier_thresh=[null,{threshold}]")
    doc = json.loads((root / "vgrid" / "sweep.json").read_text())
    off, on = doc["points"]
    assert (off["verifier_thresh"], on["verifier_thresh"], doc["pilot"]) == (None, threshold, 0)
    assert on["masks_per_image"] < off["masks_per_image"] == len(pilot_masks) / off["images"]
    # At null: the pilot's masks, each with its candidate's score (scored before the clean-up)
    same, _ = scored_sweep(root, "voff", "sweep.verifier_thresh=[null]")
    ours = read_masks(same["output"]["dir"]).to_pylist()
    found = pq.read_table(shard_files(out, "candidates")[0]).to_pylist()
    by_mask = {key(r): r["verifier_score"] for r in found}
    assert len(ours) == len(pilot_masks)
    for a, b in zip(ours, pilot_masks):
        assert a.pop("source") == "sweep" and b.pop("source") == "auto"
        score, pilot_score = a.pop("verifier_score"), b.pop("verifier_score")
        assert a == b and score is not None
        if key(a) in by_mask:
            assert score == pilot_score == by_mask[key(a)]
    # At the threshold: fewer masks, each scored at or above it
    cut, summary = scored_sweep(root, "von", f"sweep.verifier_thresh={threshold}")
    kept = read_masks(cut["output"]["dir"]).to_pylist()
    assert 0 < len(kept) == summary["masks"] < len(pilot_masks)
    assert all(m["verifier_score"] >= threshold for m in kept)
