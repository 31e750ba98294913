"""Tests for napari_cultureseg.core.metrics against hand-computed values."""

import math
import time

import numpy as np
import pytest

from napari_cultureseg.core import metrics as M
from napari_cultureseg.core import object_metrics as OM

# ---------------------------------------------------------------------------
# Pixel metrics
# ---------------------------------------------------------------------------
# pred                truth
# 1 1 0 0             1 0 0 0
# 1 1 0 0             1 1 0 0
# 0 0 0 0             0 0 1 0
# 0 0 0 1             0 0 0 0
# TP: (0,0) (1,0) (1,1)          -> 3
# FP: (0,1) (3,3)                -> 2
# FN: (2,2)                      -> 1
# TN: 16 - 6                     -> 10
PRED = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)
TRUTH = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)


def test_confusion_hand_counts():
    assert M.confusion(PRED, TRUTH) == (3, 2, 10, 1)


def test_pixel_metrics_hand_values():
    assert M.sensitivity(PRED, TRUTH) == pytest.approx(3 / 4)
    assert M.recall(PRED, TRUTH) == pytest.approx(3 / 4)
    assert M.specificity(PRED, TRUTH) == pytest.approx(10 / 12)
    assert M.precision(PRED, TRUTH) == pytest.approx(3 / 5)
    assert M.dice(PRED, TRUTH) == pytest.approx(6 / 9)
    # F = 2PR/(P+R) = 2*0.6*0.75/1.35 = 2/3
    assert M.f_score(PRED, TRUTH) == pytest.approx(2 * 0.6 * 0.75 / 1.35)


def test_valid_mask_excludes_pixels():
    # excluding the last row removes the FP at (3,3) and 3 TNs
    valid = np.ones((4, 4), bool)
    valid[3] = False
    assert M.confusion(PRED, TRUTH, valid) == (3, 1, 7, 1)
    assert M.precision(PRED, TRUTH, valid) == pytest.approx(3 / 4)
    assert M.specificity(PRED, TRUTH, valid) == pytest.approx(7 / 8)
    assert M.dice(PRED, TRUTH, valid=valid) == pytest.approx(6 / 8)
    with pytest.raises(ValueError):
        M.confusion(PRED, TRUTH, np.ones((2, 2), bool))


def test_empty_masks():
    e = np.zeros((4, 4), bool)
    assert M.dice(e, e) == 1.0
    assert M.f_score(e, e) == 1.0
    assert M.dice(PRED, e) == 0.0  # prediction but no truth
    assert M.dice(e, TRUTH) == 0.0
    assert math.isnan(M.sensitivity(PRED, e))  # no positives: undefined
    assert math.isnan(M.precision(e, TRUTH))  # nothing predicted: undefined
    assert M.specificity(e, TRUTH) == 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        M.confusion(PRED, TRUTH[:3])


# ---------------------------------------------------------------------------
# AUC / ROC
# ---------------------------------------------------------------------------
S4 = np.array([0.1, 0.4, 0.35, 0.8])
T4 = np.array([0, 0, 1, 1], bool)


def test_auc_hand_case():
    # positive 0.35 beats 0.1 but not 0.4; positive 0.8 beats both -> 3/4
    assert M.auc(S4, T4) == pytest.approx(0.75)
    # same data as 2-D images
    assert M.auc(S4.reshape(2, 2), T4.reshape(2, 2)) == pytest.approx(0.75)


def test_auc_ties_half_credit():
    # pos 0.5 vs neg {0.2: 1, 0.5: tie 0.5}; pos 0.9 beats both -> 3.5/4
    assert M.auc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert M.auc([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert M.auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx(0.0)
    assert math.isnan(M.auc([0.1, 0.2], [1, 1]))  # one class only


def test_auc_matches_bruteforce_mann_whitney():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(300), 1)  # many ties
    t = rng.random(300) < 0.4 + 0.3 * s
    pos, neg = s[t], s[~t]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert M.auc(s, t) == pytest.approx(expected, abs=1e-12)
    assert M.auc(s.astype(np.float32), t) == pytest.approx(expected, abs=1e-12)


def test_auc_valid_mask():
    s = np.array([0.1, 0.7, 0.6, 0.9])
    t = np.array([0, 0, 1, 1], bool)
    # neg 0.7 beats pos 0.6 -> 3/4; excluding it leaves a separable set
    assert M.auc(s, t) == pytest.approx(0.75)
    assert M.auc(s, t, valid=[1, 0, 1, 1]) == pytest.approx(1.0)


def test_auc_large_image_fast():
    rng = np.random.default_rng(1)
    t = rng.random((2000, 2000)) < 0.3
    s = (rng.random((2000, 2000)) + 0.5 * t).astype(np.float32)
    start = time.perf_counter()
    a = M.auc(s, t)
    assert time.perf_counter() - start < 15.0
    # U(0,1) vs U(0.5,1.5): P(X_pos > X_neg) = 1 - 0.5*0.5**2 = 0.875
    assert a == pytest.approx(0.875, abs=2e-3)


def test_auc_ci_hanley_mcneil_hand():
    # A = 0.75, n_pos = n_neg = 2
    a = 0.75
    q1 = a / (2 - a)  # 0.6
    q2 = 2 * a * a / (1 + a)  # 0.642857
    se = math.sqrt((a * (1 - a) + 1 * (q1 - a * a) + 1 * (q2 - a * a)) / 4)
    assert se == pytest.approx(0.276303, abs=1e-5)
    got_a, lo, hi = M.auc_ci(S4, T4)
    assert got_a == pytest.approx(0.75)
    assert lo == pytest.approx(0.75 - 1.959964 * se, abs=1e-5)
    assert hi == 1.0  # 0.75 + 0.54 clipped
    assert lo <= got_a <= hi
    _, lo90, _ = M.auc_ci(S4, T4, level=0.90)
    assert lo90 == pytest.approx(0.75 - 1.644854 * se, abs=1e-5)


def test_auc_ci_narrows_with_more_samples():
    a1, lo1, hi1 = M.auc_ci(S4, T4)
    a2, lo2, hi2 = M.auc_ci(np.tile(S4, 25), np.tile(T4, 25))
    assert a2 == pytest.approx(0.75)  # replication keeps the AUC
    assert lo2 <= a2 <= hi2
    assert hi2 - lo2 < 0.5 * (hi1 - lo1)
    assert lo2 > lo1


def test_roc_curve_hand():
    # descending: 0.8(pos) 0.4(neg) 0.35(pos) 0.1(neg)
    fpr, tpr, thr = M.roc_curve(S4, T4)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    # trapezoid area equals auc
    assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(0.75)
    f3, t3, th3 = M.roc_curve(S4, T4, n_thresholds=3)
    np.testing.assert_allclose(th3, [np.inf, 0.4, 0.1])
    np.testing.assert_allclose(f3, [0, 0.5, 1])
    np.testing.assert_allclose(t3, [0, 0.5, 1])


def test_roc_curve_ties_single_step():
    fpr, tpr, thr = M.roc_curve([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.2])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])


def test_roc_threshold_separable():
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    t = np.array([0, 0, 0, 1, 1, 1], bool)
    thr = M.roc_threshold(s, t)
    assert 0.3 < thr <= 0.6
    assert np.array_equal(s >= thr, t)


def test_roc_threshold_youden_and_valid():
    s = np.array([0.1, 0.7, 0.6, 0.9])
    t = np.array([0, 0, 1, 1], bool)
    # J: 0.9 -> 0.5, 0.7 -> 0, 0.6 -> 0.5, 0.1 -> 0; tie -> highest
    assert M.roc_threshold(s, t) == pytest.approx(0.9)
    # without the negative at 0.7 the threshold 0.6 reaches J = 1
    assert M.roc_threshold(s, t, valid=[1, 0, 1, 1]) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        M.roc_threshold(s, np.zeros(4, bool))


def test_dice_threshold_differs_from_youden_on_a_rare_class():
    # 4 positives (2 at 0.9, 2 at 0.2) among 96 negatives (10 at 0.3, 86 at 0.05).
    # Youden J: 0.9 -> 0.5, 0.3 -> 0.5 - 10/96, 0.2 -> 1 - 10/96 = 0.896 (best)
    # DSC = 2tp / (tp + fp + 4): 0.9 -> 4/6, 0.3 -> 4/16, 0.2 -> 8/18, 0.05 -> 8/104
    s = np.r_[[0.9, 0.9, 0.2, 0.2], [0.3] * 10, [0.05] * 86]
    t = np.r_[[1] * 4, [0] * 96].astype(bool)
    assert M.roc_threshold(s, t) == pytest.approx(0.2)
    assert M.dice_threshold(s, t) == pytest.approx(0.9)
    assert M.dice(s >= M.dice_threshold(s, t), t) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        M.dice_threshold(s, np.zeros(100, bool))


# ---------------------------------------------------------------------------
# Per-image summaries
# ---------------------------------------------------------------------------
def test_per_image_prf_and_mean_std():
    # image 2: pred 1 1 0 0, truth 1 0 0 0 -> TP1 FP1 FN0: P=.5 R=1 F=2/3
    p2 = np.array([1, 1, 0, 0], bool)
    t2 = np.array([1, 0, 0, 0], bool)
    res = M.per_image_prf([PRED, p2], [TRUTH, t2])
    assert len(res) == 2
    assert res[0]["precision"] == pytest.approx(0.6)
    assert res[0]["recall"] == pytest.approx(0.75)
    assert res[0]["f_score"] == pytest.approx(2 / 3)
    assert res[1] == pytest.approx({"precision": 0.5, "recall": 1.0, "f_score": 2 / 3})
    summ = M.mean_std_records(res)
    assert summ["precision"] == pytest.approx((0.55, 0.05))
    assert summ["recall"] == pytest.approx((0.875, 0.125))
    assert M.mean_std([0.5, 1.0]) == pytest.approx((0.75, 0.25))
    assert M.mean_std([0.5, np.nan, 1.0]) == pytest.approx((0.75, 0.25))
    assert M.mean_std([1.0, 2.0, 3.0], ddof=1) == pytest.approx((2.0, 1.0))
    assert all(math.isnan(v) for v in M.mean_std([np.nan]))


# ---------------------------------------------------------------------------
# Object-level metrics
# ---------------------------------------------------------------------------
def _touching(w1):
    """Two touching objects in a 4x8 image: label 1 cols [0,w1), label 2 the rest."""
    lab = np.zeros((4, 8), np.int32)
    lab[:, :w1] = 1
    lab[:, w1:] = 2
    return lab


def test_iou_matrix_noncontiguous_labels():
    true = np.zeros((4, 8), np.int32)
    true[:, :5] = 5  # 20 px
    true[:, 5:] = 9  # 12 px
    pred = np.zeros((4, 8), np.int32)
    pred[:, :4] = 3  # 16 px, inside label 5
    iou, pid, tid = OM.iou_matrix(pred, true)
    assert iou.shape == (1, 2)
    assert list(pid) == [3] and list(tid) == [5, 9]
    np.testing.assert_allclose(iou, [[16 / 20, 0.0]])


def test_merged_prediction_matches_at_most_one():
    merged = np.ones((4, 8), np.int32)  # 32 px covering both objects
    # unequal halves: IoU with label 1 = 20/32 = 0.625, with label 2 = 12/32
    m = OM.match_instances(merged, _touching(5), 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert m.iou_shape == (1, 2)
    assert m.pairs.tolist() == [[1, 1]]
    assert m.ious == pytest.approx([0.625])
    # low threshold: both IoUs qualify but the merged object matches only one
    m = OM.match_instances(merged, _touching(5), 0.1)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    # equal halves: IoU exactly 0.5 is not > 0.5 -> no match
    m = OM.match_instances(merged, _touching(4), 0.5)
    assert (m.tp, m.fp, m.fn) == (0, 1, 2)
    m = OM.match_instances(merged, _touching(4), 0.3)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    # split prediction identical to truth -> both match
    assert OM.match_instances(_touching(4), _touching(4)).tp == 2


def test_low_threshold_maximises_match_count():
    # 1 x 20 strips: true t1=[0,10) t2=[10,20); pred p2=[0,3) p1=[3,16)
    # IoU(p1,t1)=7/16=.4375  IoU(p1,t2)=6/17=.353  IoU(p2,t1)=3/10=.3
    # greedy-by-IoU takes p1-t1 and leaves p2 unmatched (1 match);
    # the maximum matching is p1-t2, p2-t1 (2 matches).
    true = np.zeros((1, 20), np.int32)
    true[0, :10], true[0, 10:] = 1, 2
    pred = np.zeros((1, 20), np.int32)
    pred[0, 3:16], pred[0, :3] = 1, 2
    iou, _, _ = OM.iou_matrix(pred, true)
    np.testing.assert_allclose(iou, [[7 / 16, 6 / 17], [3 / 10, 0]])
    m = OM.match_instances(pred, true, 0.25)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert sorted(map(tuple, m.pairs.tolist())) == [(1, 2), (2, 1)]
    assert OM.match_instances(pred, true, 0.5).tp == 0


def test_object_prf():
    merged = np.ones((4, 8), np.int32)
    p, r, f = OM.object_prf(merged, _touching(5), 0.5)  # TP1 FP0 FN1
    assert (p, r, f) == pytest.approx((1.0, 0.5, 2 / 3))
    e = np.zeros((4, 8), np.int32)
    assert OM.object_prf(e, e)[2] == 1.0
    p, r, f = OM.object_prf(e, _touching(5))
    assert math.isnan(p) and r == 0.0 and f == 0.0


def test_segmentation_accuracy_pooled():
    # image A: truth has 2 objects; pred matches one exactly and adds a
    # spurious object -> TP1 FP1 FN1
    ta = np.zeros((6, 6), np.int32)
    ta[0:2, 0:2], ta[4:6, 4:6] = 1, 2
    pa = np.zeros((6, 6), np.int32)
    pa[0:2, 0:2], pa[0:2, 4:6] = 1, 2
    # image B: one object matched exactly -> TP1 FP0 FN0
    tb = np.zeros((6, 6), np.int32)
    tb[2:4, 2:4] = 7
    pb = (tb > 0).astype(np.int32)
    # pooled 2 / (2 + 1 + 1) = 0.5 (per-image mean would be (1/3 + 1)/2)
    assert OM.segmentation_accuracy([pa, pb], [ta, tb], 0.5) == pytest.approx(0.5)
    assert OM.segmentation_accuracy(pa, ta, 0.5) == pytest.approx(1 / 3)
    assert OM.segmentation_accuracy(pb, tb, 0.5) == pytest.approx(1.0)
    e = np.zeros((6, 6), np.int32)
    assert OM.segmentation_accuracy([e, e], [e, e], 0.5) == 1.0
    assert OM.segmentation_accuracy([e], [tb], 0.5) == 0.0


def test_mean_segmentation_accuracy_known_iou():
    true = np.zeros((8, 8), np.int32)
    true[0:5, 0:4] = 1  # 20 px
    pred = np.zeros((8, 8), np.int32)
    pred[0:4, 0:4] = 1  # 16 px inside -> IoU 0.8
    # matched at tau 0.50..0.75 (6 of 10) -> 0.6
    msa, sa = OM.mean_segmentation_accuracy([pred], [true], per_tau=True)
    assert msa == pytest.approx(0.6)
    np.testing.assert_array_equal(sa, [1] * 6 + [0] * 4)
    assert OM.mean_segmentation_accuracy(
        [pred], [true], np.arange(0.5, 1.0, 0.05)
    ) == pytest.approx(0.6)
    # IoU exactly 0.75 (12/16) is not > 0.75 -> 5 of 10
    true2 = np.zeros((8, 8), np.int32)
    true2[0:4, 0:4] = 1
    pred2 = np.zeros((8, 8), np.int32)
    pred2[0:4, 0:3] = 1
    assert OM.mean_segmentation_accuracy(pred2, true2) == pytest.approx(0.5)
    # pooled: per tau (1 + [IoU 0.75 matched]) / (2 + 2*[unmatched])
    exp = np.mean([2 / 2] * 5 + [1 / 3] + [0] * 4)
    assert OM.mean_segmentation_accuracy([pred, pred2], [true, true2]) == pytest.approx(exp)


# ---------------------------------------------------------------------------
# Convenience report
# ---------------------------------------------------------------------------
def test_binary_report():
    # threshold 0.5: pred [0,0,0,1] vs truth [0,0,1,1] -> TP1 FP0 TN2 FN1
    r = M.binary_report(S4, T4)
    assert set(r) == {"sensitivity", "specificity", "dice", "auc", "auc_low", "auc_high"}
    assert r["sensitivity"] == pytest.approx(0.5)
    assert r["specificity"] == pytest.approx(1.0)
    assert r["dice"] == pytest.approx(2 / 3)
    a, lo, hi = M.auc_ci(S4, T4)
    assert (r["auc"], r["auc_low"], r["auc_high"]) == pytest.approx((0.75, lo, hi))
    # threshold 0.35 is inclusive: pred [0,1,1,1] -> TP2 FP1 TN1 FN0
    r = M.binary_report(S4, T4, threshold=0.35)
    assert (r["sensitivity"], r["specificity"], r["dice"]) == pytest.approx((1.0, 0.5, 0.8))
    # valid mask drops the 0.4 negative: pred [0,1,1] at 0.35 -> TP2 FP0 TN1
    r = M.binary_report(S4, T4, threshold=0.35, valid=[1, 0, 1, 1])
    assert (r["specificity"], r["auc"]) == pytest.approx((1.0, 1.0))
