"""Audit figures on cases whose answer is known by construction, and AR against pycocotools run directly."""

import contextlib
import io

import numpy as np
import pytest
from maskdata import rect, side

from data_engine.audit.core import audit
from data_engine.io import rle

H, W = 128, 160  # boundary band d = round(0.02 * hypot(128, 160)) = 4
KEYS = [
    "frac_iou_above_0.90",
    "frac_iou_above_0.75",
    "mean_iou",
    "mean_boundary_iou",
    "recall@0.5",
    "recall@0.75",
    "recall@0.9",
    "precision@0.5",
    "ar@10",
    "ar@100",
    "ar@1000",
]


def run(expert: dict, pred: dict, **kwargs) -> dict:
    return audit(side(pred, (H, W), **kwargs), side(expert, (H, W)))["metrics"]


def shifted(y0, x0, y1, x1, dx):
    return rect(H, W, y0, x0 + dx, y1, x1 + dx)


def test_identical_masks_score_one_everywhere():
    masks = [rect(H, W, 0, 0, 100, 100), rect(H, W, 0, 110, 40, 150), rect(H, W, 110, 110, 120, 120)]
    m = run({"a.png": masks, "b.png": masks[:1]}, {"a.png": masks, "b.png": masks[:1]})
    assert all(m[k] == pytest.approx(1.0) for k in KEYS)
    assert (m["matched_pairs"], m["expert_unmatched"], m["pred_unmatched"]) == (4, 0, 0)
    assert m["by_size"]["small"]["recall@0.9"] == m["by_size"]["large"]["ar@100"] == 1.0


def test_shifts_by_known_amounts():
    # 20 px wide, 10 px high rectangles shifted right by k: IoU = (20 - k) / (20 + k).
    boxes = [(0, 0, 10, 20), (20, 40, 30, 60), (50, 80, 60, 100)]
    shifts = [1, 2, 4]
    expert = {"a.png": [rect(H, W, *b) for b in boxes]}
    pred = {"a.png": [shifted(*b, k) for b, k in zip(boxes, shifts)]}
    ious = [(20 - k) / (20 + k) for k in shifts]  # 0.905, 0.818, 0.667
    m = run(expert, pred)
    assert m["mean_iou"] == pytest.approx(np.mean(ious))
    assert m["frac_iou_above_0.90"] == pytest.approx(1 / 3)
    assert m["frac_iou_above_0.75"] == pytest.approx(2 / 3)
    assert (m["recall@0.5"], m["recall@0.75"], m["recall@0.9"]) == pytest.approx((1, 2 / 3, 1 / 3))
    # COCO thresholds 0.50:0.95 passed: 9, 7 and 4 of 10
    assert m["ar@100"] == pytest.approx(np.mean([0.9, 0.7, 0.4]))


def test_eroded_mask_iou_and_boundary_iou():
    L, e, d = 40, 1, 4
    expert = {"a.png": [rect(H, W, 20, 20, 20 + L, 20 + L)]}
    pred = {"a.png": [rect(H, W, 20 + e, 20 + e, 20 + L - e, 20 + L - e)]}
    m = run(expert, pred)
    assert m["mean_iou"] == pytest.approx((L - 2 * e) ** 2 / L**2)
    ring_a, ring_b = L**2 - (L - 2 * d) ** 2, (L - 2 * e) ** 2 - (L - 2 * e - 2 * d) ** 2
    inter = (L - 2 * e) ** 2 - (L - 2 * d) ** 2
    assert m["mean_boundary_iou"] == pytest.approx(inter / (ring_a + ring_b - inter))  # 0.6


def test_missing_and_extra_masks():
    expert_masks = [rect(H, W, 0, 40 * i, 20, 40 * i + 20) for i in range(4)]
    extra = [rect(H, W, 100, 0, 120, 20), rect(H, W, 100, 40, 120, 60)]
    m = run({"a.png": expert_masks}, {"a.png": expert_masks[:3] + extra})
    assert (m["expert_masks"], m["pred_masks"], m["matched_pairs"]) == (4, 5, 3)
    assert (m["expert_unmatched"], m["pred_unmatched"]) == (1, 2)
    assert m["recall@0.5"] == pytest.approx(0.75) and m["precision@0.5"] == pytest.approx(0.6)
    assert m["frac_iou_above_0.90"] == 1.0 and m["mean_iou"] == 1.0  # pair quality ignores misses
    assert m["ar@100"] == pytest.approx(0.75)


def test_an_image_without_generated_masks_counts_its_expert_masks_as_missed():
    masks = [rect(H, W, 0, 0, 20, 20)]
    m = run({"a.png": masks, "b.png": masks}, {"a.png": masks, "b.png": []})
    assert m["recall@0.5"] == 0.5 and m["ar@1000"] == pytest.approx(0.5)
    assert [w["file_name"] for w in m["worst_images"]] == ["b.png", "a.png"]
    assert m["worst_images"][0]["expert_mean_iou"] == 0.0


def test_by_size_uses_the_expert_area_and_unmatched_generated_masks_their_own():
    large, medium, small = rect(H, W, 0, 0, 100, 100), rect(H, W, 0, 110, 40, 150), rect(H, W, 110, 110, 120, 120)
    extra_small = rect(H, W, 110, 0, 115, 5)
    pred = [large, shifted(0, 110, 40, 150, 4), extra_small]  # medium shifted 4 px, small missed
    m = run({"a.png": [large, medium, small]}, {"a.png": pred})["by_size"]
    assert m["large"]["mean_iou"] == 1.0 and m["large"]["ar@100"] == 1.0
    assert m["medium"]["mean_iou"] == pytest.approx(36 / 44)
    assert (m["small"]["expert_unmatched"], m["small"]["pred_unmatched"], m["small"]["recall@0.5"]) == (1, 1, 0.0)
    assert m["small"]["ar@100"] == 0.0


def test_by_stage_rematches_each_stage_alone():
    e0, e1 = rect(H, W, 0, 0, 20, 20), rect(H, W, 50, 50, 70, 70)
    e0_shifted = shifted(0, 0, 20, 20, 2)  # IoU 18/22 with e0
    pred = {"a.png": [e0, e1, e0_shifted]}
    m = run({"a.png": [e0, e1]}, pred, stages={"a.png": ["a", "b", "b"]})
    assert m["recall@0.9"] == 1.0 and m["pred_unmatched"] == 1  # overall: the exact masks win
    assert m["by_stage"]["a"]["recall@0.5"] == 0.5 and m["by_stage"]["a"]["pred_masks"] == 1
    b = m["by_stage"]["b"]  # stage b alone covers e0 with its shifted copy
    assert (b["recall@0.5"], b["pred_unmatched"]) == (1.0, 0)
    assert b["mean_iou"] == pytest.approx((1 + 18 / 22) / 2)


def test_min_iou_turns_weak_pairs_into_misses():
    expert = {"a.png": [rect(H, W, 0, 0, 20, 20)]}
    pred = {"a.png": [shifted(0, 0, 20, 20, 12)]}  # IoU 8 / 32 = 0.25
    loose = audit(side(pred, (H, W)), side(expert, (H, W)))["metrics"]
    strict = audit(side(pred, (H, W)), side(expert, (H, W)), min_iou=0.5)["metrics"]
    assert loose["matched_pairs"] == 1 and loose["mean_iou"] == pytest.approx(0.25)
    assert strict["matched_pairs"] == 0 and strict["mean_iou"] is None and strict["expert_unmatched"] == 1


def random_scene(rng, n_expert=6, n_pred=14):
    """Expert rectangles of all sizes and generated masks: jittered copies, some junk, random scores."""
    expert, pred, scores = [], [], []
    for _ in range(n_expert):
        hh, ww = (int(v) for v in rng.integers(5, 120, 2))
        y, x = int(rng.integers(0, H - hh)), int(rng.integers(0, W - ww))
        expert.append(rect(H, W, y, x, y + hh, x + ww))
    for i in range(n_pred):
        if i < n_expert and rng.random() < 0.8:
            ys, xs = np.nonzero(expert[i])
            dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
            pred.append(rect(H, W, max(ys.min() + dy, 0), max(xs.min() + dx, 0), ys.max() + 1 + dy, xs.max() + 1 + dx))
        else:
            y, x = int(rng.integers(0, H - 20)), int(rng.integers(0, W - 20))
            pred.append(rect(H, W, y, x, y + int(rng.integers(3, 20)), x + int(rng.integers(3, 20))))
        scores.append(float(rng.random()))
    return expert, pred, scores


def cocoeval_summary(expert: dict, pred: dict, scores: dict) -> np.ndarray:
    """COCOeval's own summary with maxDets (10, 100, 1000): stats[6:9] are AR@10/100/1000,
    stats[9:12] AR small/medium/large at 1000."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "thing"}]}
    dets = []
    for image_id, name in enumerate(expert, start=1):
        gt["images"].append({"id": image_id, "height": H, "width": W})
        for c, m in zip(rle.encode(np.stack(expert[name])), expert[name]):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 7,
                    "segmentation": {"size": [H, W], "counts": c},
                    "area": float(m.sum()),
                    "iscrowd": 0,
                }
            )
        for c, s in zip(rle.encode(np.stack(pred[name])), scores[name]):
            dets.append(
                {"image_id": image_id, "category_id": 7, "segmentation": {"size": [H, W], "counts": c}, "score": s}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "segm")
        ev.params.useCats = 0
        ev.params.maxDets = [10, 100, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_ar_agrees_with_cocoeval():
    rng = np.random.default_rng(3)
    expert, pred, scores = {}, {}, {}
    for i in range(4):
        expert[f"{i}.png"], pred[f"{i}.png"], scores[f"{i}.png"] = random_scene(rng)
    # One image where the 10 best-scored masks are junk: AR@10 < AR@100
    expert["junk.png"] = [rect(H, W, 0, 0, 30, 30)]
    pred["junk.png"] = [rect(H, W, 100, 5 * i, 110, 5 * i + 4) for i in range(10)] + [rect(H, W, 0, 0, 30, 30)]
    scores["junk.png"] = [0.9] * 10 + [0.1]
    m = run(expert, pred, scores=scores)
    stats = cocoeval_summary(expert, pred, scores)
    assert m["ar@10"] < m["ar@100"]
    assert [m["ar@10"], m["ar@100"], m["ar@1000"]] == pytest.approx(list(stats[6:9]))
    sizes = [m["by_size"][s]["ar@1000"] for s in ("small", "medium", "large")]
    assert sizes == pytest.approx(list(stats[9:12]))


def test_images_failed_or_absent_in_the_generated_run_are_left_out_and_counted():
    masks = [rect(H, W, 0, 0, 20, 20)]
    pred = side({"a.png": masks}, (H, W))
    pred["failed"] = ["b.png"]
    result = audit(pred, side({"a.png": masks, "b.png": masks, "c.png": masks}, (H, W)))["metrics"]
    assert (result["images"], result["images_failed_in_pred"], result["images_only_in_expert"]) == (1, 1, 1)
    assert result["recall@0.5"] == 1.0


def test_ar_without_generated_masks_is_zero_only_where_there_is_ground_truth():
    m = run({"a.png": [rect(H, W, 0, 0, 10, 10)]}, {"a.png": []})
    assert m["ar@100"] == 0.0 and m["by_size"]["small"]["ar@100"] == 0.0
    assert m["by_size"]["large"]["ar@100"] is None and m["by_size"]["large"]["recall@0.5"] is None
