"""Metrics on hand-made masks with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from propl.metrics import (
    SegScores,
    UncertaintyAUROC,
    dice,
    expected_calibration_error,
    hd95,
    iou,
    score_case,
    summarize,
    uncertainty_error_auroc,
)


def square(top: int, left: int, size: int = 10, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_identical_masks():
    a = square(10, 10)
    assert dice(a, a) == 1.0
    assert iou(a, a) == 1.0
    assert hd95(a, a) == 0.0


def test_disjoint_masks():
    a, b = square(0, 0), square(25, 25)
    assert dice(a, b) == 0.0
    assert iou(a, b) == 0.0
    assert hd95(a, b) > 20


def test_both_empty():
    e = np.zeros((8, 8), dtype=np.uint8)
    assert dice(e, e) == 1.0
    assert iou(e, e) == 1.0
    assert math.isnan(hd95(e, e))


def test_one_empty():
    a, e = square(2, 2, 3, (8, 8)), np.zeros((8, 8), dtype=bool)
    assert dice(a, e) == dice(e, a) == 0.0
    assert iou(a, e) == 0.0
    assert math.isnan(hd95(a, e)) and math.isnan(hd95(e, a))


def test_shifted_square_hand_computed():
    # 10x10 square vs the same shifted 2 columns right: overlap 10x8 = 80.
    a, b = square(10, 10), square(10, 12)
    assert dice(a, b) == pytest.approx(2 * 80 / 200)
    assert iou(a, b) == pytest.approx(80 / 120)
    # Boundary distances A->B (36 px): 16 at 0, 4 at 1, 16 at 2 (left edge is 2 px from B's
    # left edge); symmetric for B->A; the 95th percentile is 2.
    assert hd95(a, b) == pytest.approx(2.0)
    assert hd95(a, b, spacing=(0.5, 0.5)) == pytest.approx(1.0)
    # anisotropic: the shift is along columns, so only the column spacing matters
    assert hd95(a, b, spacing=(1.0, 0.3)) == pytest.approx(0.6)


def test_hd95_uses_boundaries_not_areas():
    # a hole inside the blob adds boundary pixels ~10 px from the outer outline
    yy, xx = np.mgrid[:41, :41]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2
    assert hd95(disc, disc) == 0.0
    blob = square(5, 5, 30, (41, 41))
    blob_with_hole = blob.copy()
    blob_with_hole[15:25, 15:25] = False
    assert hd95(blob, blob_with_hole) == pytest.approx(10.0, abs=1.5)


def test_hd95_is_robust_to_a_single_outlier_pixel():
    a = square(5, 5, 20, (64, 64))
    b = a.copy()
    b[60, 60] = True  # one far stray pixel: plain Hausdorff is large, HD95 is not
    assert hd95(a, b) < 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        hd95(square(1, 1, 3, (8, 8)), square(1, 1, 3, (8, 8)), spacing=(1.0,))


def test_labels_255_count_as_foreground():
    a = square(3, 3, 4, (12, 12)).astype(np.uint8) * 255
    assert dice(a, a > 0) == 1.0


def test_score_case():
    s = score_case(square(10, 10), square(10, 12), spacing=(0.5, 0.5))
    assert s == SegScores(dice=pytest.approx(0.8), iou=pytest.approx(2 / 3), hd95=1.0)


def test_ece_perfectly_calibrated_is_zero():
    # in the 0.25 bin a quarter of the pixels are foreground, in the 0.75 bin three quarters
    prob = np.array([0.25] * 4 + [0.75] * 4)
    gt = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(prob, gt, n_bins=10) == pytest.approx(0.0)


def test_ece_overconfident():
    # always 0.99 sure of foreground, right half of the time: |0.5 - 0.99| = 0.49
    prob = np.full(100, 0.99)
    gt = np.arange(100) % 2
    assert expected_calibration_error(prob, gt) == pytest.approx(0.49)
    # weighting by count: half the pixels perfectly calibrated (p=0 all background)
    prob2 = np.concatenate([prob, np.zeros(100)])
    gt2 = np.concatenate([gt, np.zeros(100)])
    assert expected_calibration_error(prob2, gt2) == pytest.approx(0.245)


def test_ece_edges_and_large_input(rng):
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0
    prob = rng.random(2_000_000)
    gt = rng.random(prob.size) < prob  # calibrated by construction
    assert expected_calibration_error(prob, gt) < 0.005


def test_auroc_perfect_inverted_and_undefined():
    gt = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 0, 0, 1])  # errors at 1 and 3
    err = pred != gt
    unc_good = np.where(err, 0.9, 0.1)
    assert uncertainty_error_auroc(unc_good, pred, gt) == 1.0
    assert uncertainty_error_auroc(1 - unc_good, pred, gt) == 0.0
    assert uncertainty_error_auroc(np.ones(6), pred, gt) == 0.5  # all ties
    assert math.isnan(uncertainty_error_auroc(unc_good, gt, gt))  # no errors
    assert math.isnan(uncertainty_error_auroc(unc_good, 1 - gt, gt))  # only errors


def test_auroc_hand_computed_with_ties():
    # errors have u = [0.5, 0.9]; correct pixels u = [0.1, 0.5]
    # pairs: (0.5 vs 0.1) win, (0.5 vs 0.5) half, (0.9 vs both) 2 wins -> 3.5 / 4
    unc = np.array([0.5, 0.9, 0.1, 0.5])
    pred = np.array([1, 1, 0, 0])
    gt = np.array([0, 0, 0, 0])
    assert uncertainty_error_auroc(unc, pred, gt) == pytest.approx(0.875)


def test_auroc_random_is_chance(rng):
    gt = rng.random((256, 256)) < 0.3
    pred = rng.random((256, 256)) < 0.3
    assert uncertainty_error_auroc(rng.random((256, 256)), pred, gt) == pytest.approx(0.5, abs=0.02)


def test_streaming_auroc_matches_exact(rng):
    acc = UncertaintyAUROC()
    uncs, preds, gts = [], [], []
    for _ in range(4):
        gt = rng.random((64, 64)) < 0.4
        pred = gt ^ (rng.random((64, 64)) < 0.2)
        # informative but noisy uncertainty
        unc = np.clip(0.3 * (pred != gt) + 0.7 * rng.random((64, 64)), 0, 1)
        acc.update(unc, pred, gt)
        uncs.append(unc), preds.append(pred), gts.append(gt)
    exact = uncertainty_error_auroc(np.stack(uncs), np.stack(preds), np.stack(gts))
    assert 0.6 < exact < 0.95
    assert acc.compute() == pytest.approx(exact, abs=0.001)


def test_streaming_auroc_resolves_uncertainties_crowded_near_zero(rng):
    """An MC standard deviation is ~1e-4 on most pixels: equal-width bins over [0, 1] would
    put them all in the first bin and score the ranking among them as ties (0.5)."""
    gt = rng.random((128, 128)) < 0.4
    pred = gt ^ (rng.random((128, 128)) < 0.1)
    unc = 1e-4 * (0.5 * (pred != gt) + rng.random((128, 128)))
    acc = UncertaintyAUROC()
    acc.update(unc, pred, gt)
    exact = uncertainty_error_auroc(unc, pred, gt)
    assert exact > 0.7
    assert acc.compute() == pytest.approx(exact, abs=0.001)


def test_streaming_quantiles_of_the_pixels_seen(rng):
    acc = UncertaintyAUROC(max_value=2.0)
    assert math.isnan(acc.quantile(0.5))
    unc = rng.random((100, 100)) * 1e-3
    gt = rng.random((100, 100)) < 0.5
    acc.update(unc, gt, gt)
    acc.update(unc + 1.0, ~gt, gt)  # errors and correct pixels both count
    assert acc.quantile(0.25) == pytest.approx(np.quantile(unc, 0.5), rel=0.003)
    assert acc.quantile(0.75) == pytest.approx(1.0 + np.quantile(unc, 0.5), rel=0.003)
    assert acc.quantile(0.0) == pytest.approx(unc.min(), rel=0.003)
    with pytest.raises(ValueError, match="q must be"):
        acc.quantile(1.5)


def test_streaming_flagged_fractions():
    acc = UncertaintyAUROC()
    assert all(math.isnan(v) for v in acc.flagged(0.5))
    gt = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 0])  # errors at 3 (u 0.6) and 5 (u 0.2)
    acc.update(np.array([0.1, 0.55, 0.9, 0.6, 0.3, 0.2]), pred, gt)
    assert acc.flagged(0.5) == pytest.approx((3 / 6, 1 / 2))
    assert acc.flagged(0.6) == pytest.approx((2 / 6, 1 / 2))  # at the level counts
    assert acc.flagged(0.0) == pytest.approx((1.0, 1.0))
    assert acc.flagged(0.95) == pytest.approx((0.0, 0.0))


def test_streaming_auroc_edge_cases():
    acc = UncertaintyAUROC()
    assert math.isnan(acc.compute())
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0])  # one error, at index 3
    acc.update(np.array([-1.0, 0.05, 0.1, 0.5]), pred, gt)  # -1 is clipped to 0
    assert acc.compute() == 1.0
    acc.reset()
    # 2.0 is clipped to max_value, where it ties with 1.0: (1 + 0.5 + 1) / 3
    acc.update(np.array([0.05, 1.0, 0.1, 2.0]), pred, gt)
    assert acc.compute() == pytest.approx(2.5 / 3)
    acc.reset()
    # values within 0.1 % of each other share a bin; 0.2 % apart they do not
    acc.update(np.array([0.05, 0.5, 0.1, 0.5004]), pred, gt)
    assert acc.compute() == pytest.approx(2.5 / 3)
    acc.reset()
    acc.update(np.array([0.05, 0.5, 0.1, 0.501]), pred, gt)
    assert acc.compute() == 1.0
    with pytest.raises(ValueError, match="max_value"):
        UncertaintyAUROC(max_value=0.0)
    acc.reset()
    acc.update(np.zeros(4), gt, gt)
    assert math.isnan(acc.compute())


def test_summarize_math():
    nan = float("nan")
    per_case = {
        "a": [SegScores(1.0, 1.0, 0.0), SegScores(0.5, 1 / 3, 4.0)],
        "b": [SegScores(0.2, 0.1, nan)],
        "empty": [],
    }
    out = summarize(per_case)
    assert out["per_task"]["a"] == {"dice": 75.0, "iou": 66.67, "hd95": 2.0, "n": 2}
    b = out["per_task"]["b"]
    assert b["dice"] == 20.0 and b["iou"] == 10.0 and b["n"] == 1 and math.isnan(b["hd95"])
    assert math.isnan(out["per_task"]["empty"]["dice"]) and out["per_task"]["empty"]["n"] == 0
    # mean over tasks (not over cases), tasks without cases left out
    assert out["mdice"] == pytest.approx((75.0 + 20.0) / 2)
    assert out["miou"] == pytest.approx(round((200 / 3 + 10.0) / 2, 2))


def test_summarize_nothing():
    out = summarize({})
    assert math.isnan(out["mdice"]) and out["per_task"] == {}
