"""Evaluation metrics for binary and instance segmentations (numpy/scipy only).

Conventions: an optional boolean ``valid`` mask selects the pixels counted;
scores are binarised as ``scores >= threshold`` everywhere, so a threshold
from :func:`roc_threshold` reproduces its ROC point; ratios with a zero
denominator are nan, except Dice/F-score and segmentation accuracy, which are
1.0 when there is nothing to find and nothing predicted; label images use 0
for background and positive (not necessarily contiguous) ids for objects.

This module: pixel metrics, ROC analysis and per-image summaries; the
object-level (instance) metrics are in :mod:`.object_metrics`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from .postprocess import above

__all__ = [
    "confusion",
    "sensitivity",
    "specificity",
    "dice",
    "precision",
    "recall",
    "f_score",
    "auc",
    "auc_ci",
    "roc_curve",
    "roc_threshold",
    "per_image_prf",
    "mean_std",
    "mean_std_records",
    "binary_report",
]


def _ratio(num, den):
    return float(num) / float(den) if den else float("nan")


def _dice_counts(tp, fp, fn):
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2.0 * tp / den


def _check_shapes(a, b, names=("pred", "truth")):
    if np.shape(a) != np.shape(b):
        raise ValueError(f"{names[0]} shape {np.shape(a)} != {names[1]} shape {np.shape(b)}")


def _flat(x, valid, dtype=None):
    x = np.asarray(x, dtype=dtype)
    if valid is None:
        return x.ravel()
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != x.shape:
        raise ValueError(f"valid shape {valid.shape} != data shape {x.shape}")
    return x[valid]


# --------------------------------------------------------------- pixel metrics
def confusion(pred, truth, valid=None):
    """Pixel confusion counts of two binary masks.

    Parameters
    ----------
    pred, truth : array_like of bool
        Predicted and reference masks of identical shape.
    valid : array_like of bool, optional
        Only pixels where ``valid`` is True are counted.

    Returns
    -------
    tp, fp, tn, fn : int
    """
    _check_shapes(pred, truth)
    p, t = _flat(pred, valid, bool), _flat(truth, valid, bool)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return tp, fp, int(p.size) - tp - fp - fn, fn


def sensitivity(pred, truth, valid=None):
    """Sensitivity (true-positive rate) ``TP / (TP + FN)``; nan if truth is empty."""
    tp, fp, tn, fn = confusion(pred, truth, valid)
    return _ratio(tp, tp + fn)


def specificity(pred, truth, valid=None):
    """Specificity (true-negative rate) ``TN / (TN + FP)``; nan if no negatives."""
    tp, fp, tn, fn = confusion(pred, truth, valid)
    return _ratio(tn, tn + fp)


def precision(pred, truth, valid=None):
    """Precision ``TP / (TP + FP)``; nan if the prediction is empty."""
    tp, fp, tn, fn = confusion(pred, truth, valid)
    return _ratio(tp, tp + fp)


def recall(pred, truth, valid=None):
    """Recall ``TP / (TP + FN)`` (same as :func:`sensitivity`)."""
    return sensitivity(pred, truth, valid)


def dice(pred, truth, valid=None):
    """Dice ``2 TP / (2 TP + FP + FN)``; 1.0 when both masks are empty."""
    tp, fp, tn, fn = confusion(pred, truth, valid)
    return _dice_counts(tp, fp, fn)


def f_score(pred, truth, valid=None):
    """F-score ``F = 2PR / (P + R)``, computed as ``2TP / (2TP + FP + FN)``.

    Equal to the formula whenever P and R are defined, 0 if TP = 0, and 1.0
    when both masks are empty; identical to :func:`dice` for binary masks.
    """
    return dice(pred, truth, valid)


# ---------------------------------------------------------------- ROC analysis
def _roc_counts(scores, truth, valid):
    """Cumulative (fp, tp) counts at each distinct score, descending."""
    _check_shapes(scores, truth, ("scores", "truth"))
    s, y = _flat(scores, valid), _flat(truth, valid, bool)
    if s.dtype == bool or s.dtype == np.float16:
        s = s.astype(np.float32)
    if s.dtype.kind == "f" and np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if s.size == 0:
        e = np.zeros(0, np.int64)
        return e, e, s, 0, 0
    order = np.argsort(s)[::-1]
    s, y = s[order], y[order]
    # last index of each run of equal scores: tied scores form one ROC step
    idx = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[idx]
    fps = idx.astype(np.int64) + 1 - tps
    return fps, tps, s[idx], int(tps[-1]), int(fps[-1])


def roc_curve(scores, truth, valid=None, n_thresholds=None):
    """Receiver operating characteristic curve.

    Parameters
    ----------
    scores, truth : array_like
        Continuous scores (higher = positive) and reference mask.
    valid : array_like of bool, optional
        Pixels to include.
    n_thresholds : int, optional
        Keep at most this many evenly spaced points of the exact curve.

    Returns
    -------
    fpr, tpr : ndarray of float
        Rates from (0, 0) to (1, 1); nan if that class is absent.
    thresholds : ndarray
        Decreasing; point *i* is ``scores >= thresholds[i]`` (first is inf).
    """
    fps, tps, thr, n_pos, n_neg = _roc_counts(scores, truth, valid)
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    thr = np.r_[np.inf, thr.astype(np.float64)]
    if n_thresholds is not None and thr.size > n_thresholds:
        if n_thresholds < 2:
            raise ValueError("n_thresholds must be >= 2")
        keep = np.unique(np.round(np.linspace(0, thr.size - 1, n_thresholds)).astype(int))
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fpr = fps / np.float64(n_neg) if n_neg else np.full(fps.shape, np.nan)
    tpr = tps / np.float64(n_pos) if n_pos else np.full(tps.shape, np.nan)
    return fpr, tpr, thr


def _auc_from_counts(fps, tps, n_pos, n_neg):
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    f, t = np.r_[0, fps].astype(np.float64), np.r_[0, tps].astype(np.float64)
    return float(np.sum(np.diff(f) * (t[1:] + t[:-1])) / 2.0 / (float(n_pos) * n_neg))


def auc(scores, truth, valid=None):
    """Exact area under the ROC curve.

    ``AUC = P(s_pos > s_neg) + 0.5 P(s_pos == s_neg)``: the Mann-Whitney
    ``U / (n_pos n_neg)`` with half credit for ties. One sort groups tied
    scores into single ROC steps; the trapezoidal area of that step curve
    equals the rank formulation exactly. ``O(n log n)``, well under a second
    for 4 million float32 pixels. Parameters as in :func:`roc_curve`.

    Returns
    -------
    float
        AUC in [0, 1]; nan if either class is absent.
    """
    fps, tps, _, n_pos, n_neg = _roc_counts(scores, truth, valid)
    return _auc_from_counts(fps, tps, n_pos, n_neg)


def auc_ci(scores, truth, valid=None, level=0.95):
    """AUC with a Hanley & McNeil (1982) normal-approximation interval.

    With ``A`` the AUC and ``n_p`` / ``n_n`` the positive / negative counts::

        Q1 = A / (2 - A)
        Q2 = 2 A^2 / (1 + A)
        SE^2 = [A(1 - A) + (n_p - 1)(Q1 - A^2) + (n_n - 1)(Q2 - A^2)] / (n_p n_n)

    The interval is ``A -/+ z SE``, ``z = Phi^-1((1 + level) / 2)``, clipped
    to [0, 1]. Pixels are not independent samples, so for images the
    interval is optimistic (too narrow).

    Returns
    -------
    auc, low, high : float
        All nan if either class is absent.
    """
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    fps, tps, _, n_pos, n_neg = _roc_counts(scores, truth, valid)
    a = _auc_from_counts(fps, tps, n_pos, n_neg)
    if np.isnan(a):
        return a, a, a
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (
        float(n_pos) * n_neg
    )
    half = norm.ppf(0.5 + level / 2.0) * np.sqrt(max(var, 0.0))
    return a, float(max(0.0, a - half)), float(min(1.0, a + half))


def _best_threshold(scores, truth, valid, objective, *, negatives: bool, name: str) -> float:
    """The distinct score maximising ``objective(tps, fps, n_pos, n_neg)``; ties to the highest."""
    fps, tps, thr, n_pos, n_neg = _roc_counts(scores, truth, valid)
    if n_pos == 0 or (negatives and n_neg == 0):
        need = "both positive and negative" if negatives else "positive"
        raise ValueError(f"{name} needs {need} pixels")
    return float(thr[int(np.argmax(objective(tps, fps, float(n_pos), float(n_neg))))])


def roc_threshold(scores, truth, valid=None):
    """Threshold maximising Youden's J = sensitivity + specificity - 1.

    J is the height of an ROC point above the chance diagonal. It weighs
    both classes equally whatever their prevalence, which matters in
    segmentation where background far outnumbers foreground (an accuracy-
    maximising threshold would favour the majority class). Candidates are
    the distinct scores; ties in J go to the highest (most conservative).

    Returns
    -------
    float
        Threshold ``t``: positive where ``scores >= t``. Raises ValueError if
        either class is absent (J undefined).
    """
    return _best_threshold(
        scores,
        truth,
        valid,
        lambda tp, fp, p, n: tp / p - fp / n,
        negatives=True,
        name="roc_threshold",
    )


def dice_threshold(scores, truth, valid=None):
    """Threshold maximising the Dice coefficient (DSC) of ``scores >= t``.

    With ``tp(t)`` and ``fp(t)`` read off the ROC counts and ``n_pos`` the
    positive pixels, ``DSC(t) = 2 tp / (tp + fp + n_pos)``. Unlike Youden's J
    (:func:`roc_threshold`), DSC ignores true negatives, so for a rare class
    it does not trade thousands of false positives for a few true positives.
    Candidates and ties as there; raises ValueError if the class is absent.
    """
    return _best_threshold(
        scores,
        truth,
        valid,
        lambda tp, fp, p, n: 2.0 * tp / (tp + fp + p),
        negatives=False,
        name="dice_threshold",
    )


# ---------------------------------------------------------- per-image summaries
def per_image_prf(preds, truths, *, valids=None):
    """Precision, recall and F-score for each image pair.

    Parameters
    ----------
    preds, truths : sequence of array_like of bool
        Binary masks, paired by position.
    valids : sequence of array_like of bool, optional
        Per-image valid-pixel masks.

    Returns
    -------
    list of dict
        ``{"precision", "recall", "f_score"}`` per image (see :func:`f_score`).
    """
    preds, truths = list(preds), list(truths)
    if len(preds) != len(truths):
        raise ValueError("preds and truths differ in length")
    valids = [None] * len(preds) if valids is None else list(valids)
    out = []
    for p, t, v in zip(preds, truths, valids, strict=True):
        tp, fp, tn, fn = confusion(p, t, v)
        out.append(
            {
                "precision": _ratio(tp, tp + fp),
                "recall": _ratio(tp, tp + fn),
                "f_score": _dice_counts(tp, fp, fn),
            }
        )
    return out


def mean_std(values, *, ddof=0):
    """Mean and standard deviation, skipping nan (undefined) entries.

    Returns ``(nan, nan)`` if too few values remain.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0 or v.size <= ddof:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=ddof))


def mean_std_records(records, keys=None, *, ddof=0):
    """``{key: mean_std(values)}`` over a list of dicts (keys of the first)."""
    records = list(records)
    if keys is None:
        keys = list(records[0]) if records else []
    return {k: mean_std([r[k] for r in records], ddof=ddof) for k in keys}


# ---------------------------------------------------------------- convenience
def binary_report(prob, truth, threshold=0.5, valid=None):
    """Pixel metrics of a probability map against a binary reference.

    ``prob >= threshold`` is the prediction for sensitivity, specificity and
    Dice; the AUC and its Hanley-McNeil 95 % interval use raw probabilities.

    Returns
    -------
    dict
        ``sensitivity``, ``specificity``, ``dice``, ``auc``, ``auc_low``,
        ``auc_high``.
    """
    prob = np.asarray(prob)
    tp, fp, tn, fn = confusion(above(prob, threshold), truth, valid)
    a, lo, hi = auc_ci(prob, truth, valid)
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "dice": _dice_counts(tp, fp, fn),
        "auc": a,
        "auc_low": lo,
        "auc_high": hi,
    }
