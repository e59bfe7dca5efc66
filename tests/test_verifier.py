"""The mask verifier: labels from semi_merge and audit outputs, stage=verifier end to end with resume,
its figures, the verifier_score column of stage=auto and stage=semi, and stage 2's three routes through
semi, the pre-annotations, the simulated annotator and semi_merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from semi_data import OPEN, OracleDetector, make_detector_file, make_scenes, semi_cfg
from test_train import _one_torch_thread, run_killed_at_step_3  # noqa: F401 (autouse fixture)

from data_engine.config import compose, validate
from data_engine.errors import ConfigError
from data_engine.io import rle
from data_engine.io.dataset import mask_row, read_masks
from data_engine.semi import merge, prefill
from data_engine.stages import run_stage
from data_engine.verifier.data import VerifierDataError, audit_examples, held_out, merge_examples
from data_engine.verifier.features import SCALARS
from data_engine.verifier.figures import calibration, metrics, roc_auc
from data_engine.verifier.model import MaskVerifier, VerifierCheckpointError, load_verifier, save_verifier
from data_engine.verifier.routes import route

SERIAL = ["runtime=serial", "runtime.progress=false", "output.overlays=0"]


def stage_cfg(stage: str, out: Path, *overrides) -> dict:
    return compose([f"stage={stage}", *SERIAL, f"output.dir={out}", *overrides])


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """Stage 2 on 4 scenes with the exact boxes as detections: the prefill, the simulated annotators'
    pass, the merge, and an audit of the prefill against the exact masks."""
    root = tmp_path_factory.mktemp("verifier")
    scenes = make_scenes(root / "synth", num=4)
    detector = make_detector_file(root / "detector.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prefill, "detect", OracleDetector(scenes))
        run_stage(semi_cfg(scenes / "pictures", detector, root / "semi", "semi.export=[coco]"))
    run_stage(
        stage_cfg("annotate", root / "annotators", f"annotate.source={scenes}", f"annotate.prefill={root / 'semi'}")
    )
    annotations = f"semi_merge.annotations={root / 'annotators' / 'annotations.json'}"
    merged = run_stage(
        stage_cfg(
            "semi_merge", root / "merged", f"semi_merge.prefill={root / 'semi'}", "semi_merge.format=coco", annotations
        )
    )
    run_stage(
        stage_cfg("audit", root / "audit", f"audit.pred={root / 'semi'}", f"audit.expert={scenes}", "audit.worst_k=0")
    )
    return {"root": root, "scenes": scenes, "detector": detector, "merge_summary": merged}


def verifier_cfg(out: Path, data: list[Path], *overrides) -> dict:
    small = ["verifier.steps=4", "verifier.batch_size=8", "verifier.warmup_steps=1", "verifier.checkpoint_every=1"]
    return stage_cfg("verifier", out, f"verifier.data=[{','.join(map(str, data))}]", *small, *overrides)


def scripted_verifier(path: Path, center: float, slope: float = 10.0) -> Path:
    """A verifier checkpoint whose score is sigmoid(slope * (predicted_iou - center)): routes one can predict."""
    model = MaskVerifier(crop_size=8, width=8)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.scores.weight[0, SCALARS.index("predicted_iou")] = slope  # the scalars' linear part alone
        model.scores.bias[0] = -slope * center
    save_verifier(model, path)
    return path


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------


def test_merge_labels_are_the_annotators_decisions_joined_by_mask_id(engine):
    examples = merge_examples(engine["root"] / "merged", label_iou=0.9)
    m = engine["merge_summary"]["merge"]
    labels = [label for ex in examples for label in ex["labels"]]
    kept = [r for r in read_masks(engine["root"] / "merged").to_pylist() if r["source"] == merge.KEPT]
    good_edits = [
        r
        for r in read_masks(engine["root"] / "merged").to_pylist()
        if r["source"] == merge.EDITED and json.loads(r["extra"])["iou_with_prefill"] >= 0.9
    ]
    # Every prefilled mask is labelled: kept (and edited by little) ones acceptable, the rest not
    assert len(labels) == m["prefilled"] > 0
    assert sum(labels) == m["kept"] + len(good_edits) and 0 < sum(labels) < len(labels)
    acceptable = {r["mask_id"] for ex in examples for r, y in zip(ex["rows"], ex["labels"]) if y}
    assert {json.loads(r["extra"])["prefill_mask_id"] for r in kept} <= acceptable
    # The rows are the prefill's, with the scores the model sees
    assert all(r["stage"] == "semi" and r["predicted_iou"] is not None for ex in examples for r in ex["rows"])
    # Each image read back through its dataset, of the masks' size
    assert all(
        ex["dataset"].image(ex["image_id"]).shape[:2] == (ex["rows"][0]["height"], ex["rows"][0]["width"])
        for ex in examples
    )


def test_audit_labels_are_the_pairs_at_label_iou(engine):
    pairs = pq.read_table(engine["root"] / "audit" / "pairs.parquet").to_pylist()
    generated = [p for p in pairs if p["pred_mask_id"] is not None]
    for label_iou in (0.5, 0.9):
        examples = audit_examples(engine["root"] / "audit", label_iou)
        labels = [y for ex in examples for y in ex["labels"]]
        assert len(labels) == len(generated) == len(read_masks(engine["root"] / "semi"))
        assert sum(labels) == sum((p["iou"] or 0) >= label_iou for p in generated)


def test_other_folders_are_refused_naming_the_key(engine, tmp_path):
    cfg = verifier_cfg(tmp_path / "v", [engine["scenes"]])
    with pytest.raises(VerifierDataError, match="^verifier.data: .* neither a semi_merge nor an audit output"):
        run_stage(cfg)
    assert not (tmp_path / "v").exists()


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def test_stage_trains_from_merge_and_audit_outputs(engine, tmp_path):
    out = tmp_path / "v"
    root = engine["root"]
    summary = run_stage(verifier_cfg(out, [root / "merged", root / "audit"], "verifier.val_fraction=0.3"))
    total = len(read_masks(root / "semi"))
    assert summary["steps"] == 4 and summary["train_masks"] + summary["held_out_masks"] == 2 * total
    assert summary["held_out_masks"] > 0 and summary["train_masks"] > 0
    figures = json.loads((out / "metrics.json").read_text())
    held = figures["held_out"]
    assert held["masks"] == summary["held_out_masks"]
    assert sum(held[r]["masks"] for r in ("accepted", "review", "rejected")) == held["masks"]
    assert held["thresholds"] == {"accept": 0.9, "reject": 0.3}
    assert held["roc_auc"] is None or 0 <= held["roc_auc"] <= 1
    assert sum(b["masks"] for b in held["calibration"]) == held["masks"]
    model = load_verifier(out / "model.pt")
    assert model.settings["crop_size"] == 32 and not model.training
    rows = [json.loads(ln) for ln in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)


def test_a_killed_run_resumes_at_its_checkpoint_with_the_same_values(engine, tmp_path, monkeypatch):
    data = [engine["root"] / "merged"]
    straight = run_stage(verifier_cfg(tmp_path / "straight", data))
    cfg = verifier_cfg(tmp_path / "resumed", data)
    assert run_killed_at_step_3(cfg, monkeypatch)["step"] == 2
    assert run_stage(cfg)["steps"] == 4

    def logged(name):
        rows = [json.loads(ln) for ln in (tmp_path / name / "loss_log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert logged("resumed") == logged("straight")
    a, b = (load_verifier(tmp_path / name / "model.pt").state_dict() for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        json.loads((tmp_path / "resumed" / "metrics.json").read_text())["held_out"]
        == json.loads((tmp_path / "straight" / "metrics.json").read_text())["held_out"]
    )
    assert straight["steps"] == 4


@pytest.mark.parametrize(
    "override, key",
    [
        ("verifier.steps=0", "verifier.steps"),
        ("verifier.accept=1.5", "verifier.accept"),
        ("verifier.reject=0.95", "verifier.reject"),
        ("verifier.reject=0.9", "verifier.reject"),
        ("verifier.label_iou=nan", "verifier.label_iou"),
        ("verifier.val_fraction=1", "verifier.val_fraction"),
        ("verifier.crop_size=4", "verifier.crop_size"),
        ("verifier.width=12", "verifier.width"),
        ("verifier.checkpoint=/nonexistent.pt", "verifier.checkpoint"),
        ("verifier.device=tpu", "verifier.device"),
        ("verifier.data=[/nonexistent]", "verifier.data"),
        ("verifier.data=[]", "verifier.data"),
    ],
)
def test_bad_settings_fail_before_work_naming_the_key(engine, tmp_path, override, key):
    cfg = verifier_cfg(tmp_path / "bad", [engine["root"] / "merged"], override)
    for check in (validate, run_stage):
        with pytest.raises(ConfigError, match=f"^{key}:") as err:
            check(cfg)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()


def test_held_out_images_are_the_fraction_with_the_smallest_hashes_whatever_their_order():
    examples = [{"source": "/x/merged", "file_name": f"scene-{k:05d}.png"} for k in range(10)]
    held = held_out(examples, 0.3)
    assert held.sum() == 3 and (held_out(examples[::-1], 0.3) == held[::-1]).all()
    assert held_out(examples[:2], 0.01).sum() == 1 and held_out(examples[:1], 0.5).sum() == 0
    assert held_out(examples, 0.0).sum() == 0 and held_out(examples, 0.99).sum() == 9


def test_width_0_looks_at_the_scores_alone():
    model = MaskVerifier(crop_size=8, width=0).eval()
    scalars = torch.rand(3, len(SCALARS))
    a, b = torch.rand(3, 4, 8, 8), torch.rand(3, 4, 8, 8)
    assert torch.equal(model(a, scalars), model(b, scalars))
    assert not torch.equal(
        MaskVerifier(crop_size=8, width=8).eval()(a, scalars), MaskVerifier(8, width=8).eval()(b, scalars)
    )


def test_checkpoints_that_are_not_verifiers_are_one_line_errors(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("other.pt", "junk.pt", "absent.pt"):
        with pytest.raises(VerifierCheckpointError, match="give a model.pt written by stage=verifier"):
            load_verifier(tmp_path / name)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def test_roc_auc_ranks_and_counts_ties_half():
    labels = np.array([1, 1, 0, 0], bool)
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert roc_auc(np.array([0.9, 0.3, 0.5, 0.1]), labels) == 0.75
    assert roc_auc(np.array([0.9, 0.3]), np.array([1, 1], bool)) is None


def test_metrics_count_each_route_and_calibration_bins():
    scores = np.array([0.95, 0.92, 0.5, 0.4, 0.1, 0.05])
    labels = np.array([1, 0, 1, 0, 0, 0], bool)
    m = metrics(scores, labels, accept=0.9, reject=0.3)
    assert (m["accepted"]["masks"], m["review"]["masks"], m["rejected"]["masks"]) == (2, 2, 2)
    assert m["accepted"]["acceptable"] == 0.5 and m["accepted"]["recall"] == 0.5
    assert m["rejected"]["acceptable"] == 0.0 and m["review"]["recall"] == 0.5
    bins = calibration(scores, labels)
    assert [b["low"] for b in bins] == [0.0, 0.1, 0.4, 0.5, 0.9]
    assert bins[-1] == {"low": 0.9, "high": 1.0, "masks": 2, "mean_score": 0.935, "acceptable": 0.5}
    assert [route(s, 0.9, 0.3) for s in (0.9, 0.89, 0.3, 0.29)] == ["accepted", "review", "review", "rejected"]
    assert route(0.99, None, 0.3) == "review" and route(0.01, 0.9, None) == "review"


# ----------------------------------------------------------------------------------------------
# Scores on every mask, and the routes of stage 2
# ----------------------------------------------------------------------------------------------


def test_auto_stage_scores_every_mask(engine, tmp_path):
    checkpoint = scripted_verifier(tmp_path / "v.pt", center=0.5)
    pictures = engine["scenes"] / "pictures"
    small = [f"input.path={pictures}", "amg.points_per_side=8", "amg.crop_n_layers=0", "model.device=cpu", *OPEN]
    run_stage(stage_cfg("auto", tmp_path / "plain", *small))
    summary = run_stage(stage_cfg("auto", tmp_path / "scored", *small, f"verifier.checkpoint={checkpoint}"))
    plain, scored = read_masks(tmp_path / "plain").to_pylist(), read_masks(tmp_path / "scored").to_pylist()
    assert summary["masks"] == len(plain) > 0 and all(r["verifier_score"] is None for r in plain)
    # The same masks, each with the scripted score of its predicted IoU
    assert [r["segmentation"] for r in scored] == [r["segmentation"] for r in plain]
    expected = [1 / (1 + np.exp(-10 * (r["predicted_iou"] - 0.5))) for r in scored]
    # (with the filters open some masks are empty, their stability NaN: the score stays a number)
    assert np.allclose([r["verifier_score"] for r in scored], expected, atol=1e-5)
    record = json.loads((tmp_path / "scored" / "run.json").read_text())
    assert record["verifier"]["checkpoint"] == str(checkpoint) and len(record["verifier"]["sha256"]) == 64


@pytest.fixture(scope="module")
def routed(engine, tmp_path_factory):
    """The prefill of `engine` again, routed by a scripted verifier with thresholds at the terciles of
    its scores, the simulated annotators' pass over it and the merge."""
    root = tmp_path_factory.mktemp("routed")
    plain = read_masks(engine["root"] / "semi").to_pylist()
    center = float(np.median([r["predicted_iou"] for r in plain]))
    checkpoint = scripted_verifier(root / "v.pt", center)
    scores = 1 / (1 + np.exp(-10 * (np.array([r["predicted_iou"] for r in plain]) - center)))
    accept, reject = (float(np.quantile(scores, q)) for q in (0.67, 0.33))
    routing = [f"verifier.checkpoint={checkpoint}", f"verifier.accept={accept}", f"verifier.reject={reject}"]
    scenes = engine["scenes"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prefill, "detect", OracleDetector(scenes))
        semi = run_stage(
            semi_cfg(scenes / "pictures", engine["detector"], root / "semi", "semi.export=[coco]", *routing)
        )
    run_stage(
        stage_cfg("annotate", root / "annotators", f"annotate.source={scenes}", f"annotate.prefill={root / 'semi'}")
    )
    merged = run_stage(
        stage_cfg(
            "semi_merge",
            root / "merged",
            f"semi_merge.prefill={root / 'semi'}",
            "semi_merge.format=coco",
            f"semi_merge.annotations={root / 'annotators' / 'annotations.json'}",
        )
    )
    return {
        "root": root,
        "scenes": scenes,
        "plain": plain,
        "semi": semi,
        "merged": merged,
        "accept": accept,
        "reject": reject,
    }


def routes_of(rows: list[dict]) -> list[str]:
    return [json.loads(r["extra"])["route"] for r in rows]


def test_rejected_masks_are_dropped_and_counted(routed):
    rows = read_masks(routed["root"] / "semi").to_pylist()
    counts = routed["semi"]["masks_by_route"]
    assert counts["rejected"] > 0 and counts["rejected"] + len(rows) == len(routed["plain"])
    assert all(r["verifier_score"] >= routed["reject"] for r in rows)
    assert routed["merged"]["routes"] == counts


def test_accepted_masks_skip_review_and_are_kept_by_the_merge(routed):
    rows = read_masks(routed["root"] / "semi").to_pylist()
    accepted = [r for r, where in zip(rows, routes_of(rows)) if where == "accepted"]
    assert len(accepted) == routed["semi"]["masks_by_route"]["accepted"] > 0
    assert all(r["verifier_score"] >= routed["accept"] for r in accepted)
    # Not in the pre-annotations; kept as they were by the merge
    shown = json.loads((routed["root"] / "semi" / "preannotations" / "coco_instances.json").read_text())
    shown_counts = {a["segmentation"]["counts"] for a in shown["annotations"]}
    assert not shown_counts & {r["segmentation"] for r in accepted}
    m = routed["merged"]["merge"]
    assert m["accepted"] == len(accepted) and m["accepted_replaced"] == 0
    merged = [r for r in read_masks(routed["root"] / "merged").to_pylist() if r["source"] == merge.ACCEPTED]
    assert sorted(r["segmentation"] for r in merged) == sorted(r["segmentation"] for r in accepted)
    assert {json.loads(r["extra"])["prefill_mask_id"] for r in merged} == {r["mask_id"] for r in accepted}
    # The simulated annotators saw them and did not redraw what they cover
    summary = json.loads((routed["root"] / "annotators" / "summary.json").read_text())
    assert summary["accepted"] == len(accepted)
    left = json.loads((routed["root"] / "annotators" / "expert_not_accepted.json").read_text())["annotations"]
    every = json.loads((routed["scenes"] / "instances.json").read_text())["annotations"]
    assert summary["expert"] == len(left) == len(every) - summary["accepted_matching_expert"]
    assert summary["accepted_matching_expert"] > 0


def test_review_masks_are_the_pre_annotations_and_are_merged(routed):
    rows = read_masks(routed["root"] / "semi").to_pylist()
    review = [r for r, where in zip(rows, routes_of(rows)) if where == "review"]
    assert len(review) == routed["semi"]["masks_by_route"]["review"] > 0
    assert all(routed["reject"] <= r["verifier_score"] < routed["accept"] for r in review)
    shown = json.loads((routed["root"] / "semi" / "preannotations" / "coco_instances.json").read_text())
    assert sorted(a["segmentation"]["counts"] for a in shown["annotations"]) == sorted(
        r["segmentation"] for r in review
    )
    m = routed["merged"]["merge"]
    assert m["shown"] == len(review) == m["kept"] + m["edited"] + m["deleted"]
    assert m["prefilled"] == m["shown"] + m["accepted"]


def test_an_annotator_mask_over_an_accepted_one_replaces_it():
    image = {"image_id": 1, "file_name": "a.png", "height": 20, "width": 20}
    square = np.zeros((20, 20), bool)
    square[2:10, 2:10] = True
    other = np.zeros((20, 20), bool)
    other[12:18, 12:18] = True

    accepted = [
        {**mask_row(image, c, stage="semi", source="prefill", extra={"route": "accepted"}), "mask_id": k}
        for k, c in enumerate(rle.encode(np.stack([square, other])))
    ]
    redrawn = square.copy()
    redrawn[2:10, 10] = True  # the annotator's version of the first one
    drawn = [mask_row(image, rle.encode(redrawn[None])[0], stage="assisted", source="coco")]
    rows, counts = merge.merge_image(image, accepted, drawn, edit_iou=0.5)
    assert (counts["accepted"], counts["accepted_replaced"], counts["added"], counts["shown"]) == (2, 1, 1, 0)
    assert sorted(r["source"] for r in rows) == [merge.ADDED, merge.ACCEPTED]


def test_audit_reports_the_verifier_calibration(engine, routed, tmp_path):
    scenes = engine["scenes"]
    run_stage(stage_cfg("audit", tmp_path / "a", f"audit.pred={routed['root'] / 'semi'}", f"audit.expert={scenes}"))
    calibrated = json.loads((tmp_path / "a" / "metrics.json").read_text())["verifier_calibration"]
    pairs = pq.read_table(tmp_path / "a" / "pairs.parquet").to_pylist()
    generated = [p for p in pairs if p["pred_mask_id"] is not None]
    assert calibrated["masks"] == len(generated) == len(read_masks(routed["root"] / "semi"))
    bins = calibrated["bins"]
    assert sum(b["masks"] for b in bins) == calibrated["masks"]
    matching = sum(round(b["acceptable"] * b["masks"]) for b in bins)
    assert matching == sum((p["iou"] or 0) >= 0.9 for p in generated)
    assert "Verifier calibration" in (tmp_path / "a" / "report.html").read_text()
    # Masks without a score: no calibration
    plain = json.loads((engine["root"] / "audit" / "metrics.json").read_text())
    assert "verifier_calibration" not in plain
