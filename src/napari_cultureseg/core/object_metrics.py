"""Object-level metrics of instance segmentations: IoU matrices, one-to-one matching,
object precision/recall/F and segmentation accuracy (numpy/scipy only).

The conventions are those of :mod:`.metrics`: label images use 0 for background
and positive (not necessarily contiguous) ids for objects; ratios with a zero
denominator are nan, except F-score and segmentation accuracy, which are 1.0 when
there is nothing to find and nothing predicted.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .metrics import _check_shapes, _dice_counts, _ratio

__all__ = [
    "DEFAULT_TAUS",
    "MatchResult",
    "iou_matrix",
    "match_instances",
    "object_prf",
    "segmentation_accuracy",
    "mean_segmentation_accuracy",
]


#: IoU thresholds 0.50, 0.55, ..., 0.95 of the mean segmentation accuracy.
DEFAULT_TAUS = np.round(np.arange(0.5, 1.0, 0.05), 2)


# ------------------------------------------------------- object-level metrics
class MatchResult(NamedTuple):
    """One-to-one matching of predicted to reference instances."""

    tp: int
    fp: int
    fn: int
    n_pred: int
    n_true: int
    pairs: np.ndarray  #: (k, 2) matched (pred label, true label) ids
    ious: np.ndarray  #: (k,) IoU of each matched pair

    @property
    def iou_shape(self):
        """Size ``(n_pred, n_true)`` of the IoU matrix."""
        return self.n_pred, self.n_true


def _compact(labels):
    """Relabel to 0 (background), 1..n; return (flat compact labels, ids)."""
    lab = np.asarray(labels)
    if lab.dtype == bool:
        lab = lab.astype(np.uint8)
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind != "f" or not np.all(np.mod(lab, 1) == 0):
            raise ValueError("label images must contain integers")
        lab = lab.astype(np.int64)
    flat = lab.ravel()
    if flat.size == 0:
        return flat.astype(np.int64), np.zeros(0, np.int64)
    if flat.min() < 0:
        raise ValueError("label images must be non-negative")
    mx = int(flat.max())
    if mx <= max(2 * flat.size, 1 << 16):  # O(n) lookup table
        present = np.bincount(flat, minlength=mx + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lut = np.zeros(mx + 1, np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[flat], ids
    ids, inv = np.unique(flat, return_inverse=True)
    inv = inv.astype(np.int64).ravel()
    return (inv, ids[1:]) if ids[0] == 0 else (inv + 1, ids)


def _overlaps(pred_labels, true_labels):
    """Sparse joint histogram: overlapping pairs (rows, cols, iou), pid, tid."""
    _check_shapes(pred_labels, true_labels, ("pred_labels", "true_labels"))
    (p, pid), (t, tid) = _compact(pred_labels), _compact(true_labels)
    npr, n = pid.size, tid.size + 1
    code = p * n + t
    if (npr + 1) * n <= 1 << 24:
        hist = np.bincount(code, minlength=(npr + 1) * n)
        codes = np.flatnonzero(hist)
        counts = hist[codes]
    else:  # many objects: sort-based sparse histogram
        codes, counts = np.unique(code, return_counts=True)
    r, c = np.divmod(codes, n)
    area_p = np.bincount(r, counts, minlength=npr + 1)
    area_t = np.bincount(c, counts, minlength=n)
    fg = (r > 0) & (c > 0)
    r, c, inter = r[fg], c[fg], counts[fg].astype(np.float64)
    return r - 1, c - 1, inter / (area_p[r] + area_t[c] - inter), pid, tid


def iou_matrix(pred_labels, true_labels):
    """Pairwise intersection-over-union of predicted and reference objects.

    Computed in one pass from the joint histogram ``bincount(pred *
    (n_true + 1) + true)`` (a sparse ``np.unique`` of the same codes when
    there are very many objects), never by per-object loops.

    Returns
    -------
    iou : ndarray, shape (n_pred, n_true)
    pred_ids, true_ids : ndarray
        Original label ids of the rows / columns.
    """
    r, c, v, pid, tid = _overlaps(pred_labels, true_labels)
    iou = np.zeros((pid.size, tid.size))
    iou[r, c] = v
    return iou, pid, tid


def _match(r, c, v, thr):
    """Maximum one-to-one matching among sparse pairs with IoU > thr."""
    keep = v > thr
    r, c, v = r[keep], c[keep], v[keep]
    if r.size == 0 or (np.unique(r).size == r.size and np.unique(c).size == c.size):
        return r, c, v  # always the case for thr >= 0.5: partners are unique
    ur, ri = np.unique(r, return_inverse=True)
    uc, ci = np.unique(c, return_inverse=True)
    g = coo_matrix((np.ones(r.size), (ri, ur.size + ci)), shape=(ur.size + uc.size,) * 2)
    comp = connected_components(g, directed=False)[1][ri]
    order = np.argsort(comp, kind="stable")
    out = []
    for e in np.split(order, np.flatnonzero(np.diff(comp[order])) + 1):
        rr, ri_ = np.unique(ri[e], return_inverse=True)
        cc, ci_ = np.unique(ci[e], return_inverse=True)
        # maximise the number of matches; IoU (scaled to sum < 1) breaks ties
        cost = np.zeros((rr.size, cc.size))
        cost[ri_, ci_] = -1.0 - v[e] / (2.0 * min(cost.shape))
        edge = np.full(cost.shape, -1, np.intp)
        edge[ri_, ci_] = e
        a, b = linear_sum_assignment(cost)
        out.append(edge[a, b][edge[a, b] >= 0])
    sel = np.concatenate(out)
    return r[sel], c[sel], v[sel]


def _result(overlaps, thr):
    r0, c0, v0, pid, tid = overlaps
    r, c, v = _match(r0, c0, v0, thr)
    tp = int(r.size)
    pairs = np.stack([pid[r], tid[c]], axis=1) if tp else np.zeros((0, 2), np.int64)
    return MatchResult(tp, pid.size - tp, tid.size - tp, int(pid.size), int(tid.size), pairs, v)


def match_instances(pred_labels, true_labels, iou_threshold=0.5):
    """Match predicted to reference objects one-to-one at IoU > threshold.

    For ``iou_threshold >= 0.5`` an object has at most one partner above the
    threshold, so thresholding the IoUs is exact. Below 0.5 a maximum-
    cardinality assignment (ties broken by total IoU) is solved with
    :func:`scipy.optimize.linear_sum_assignment` on each connected group of
    candidate pairs.

    Parameters
    ----------
    pred_labels, true_labels : array_like of int
        Instance label images (0 = background).
    iou_threshold : float
        A pair matches only if its IoU is strictly greater than this.

    Returns
    -------
    MatchResult
        ``tp`` matched pairs, ``fp`` unmatched predictions, ``fn`` unmatched
        reference objects, ``n_pred`` x ``n_true`` IoU matrix size, pairs.
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError("iou_threshold must be in [0, 1)")
    return _result(_overlaps(pred_labels, true_labels), iou_threshold)


def object_prf(pred_labels, true_labels, iou_threshold=0.5):
    """Object-level precision, recall and F1 at an IoU threshold.

    Returns
    -------
    precision, recall, f1 : float
        ``TP/(TP+FP)``, ``TP/(TP+FN)`` (nan on a zero denominator) and
        ``2TP/(2TP+FP+FN)`` (1.0 when neither image has objects).
    """
    m = match_instances(pred_labels, true_labels, iou_threshold)
    return _ratio(m.tp, m.tp + m.fp), _ratio(m.tp, m.tp + m.fn), _dice_counts(m.tp, m.fp, m.fn)


def pooled_object_prf(preds, truths, iou_threshold=0.5) -> dict:
    """Object precision, recall and F1 with the matches of all images pooled (as the
    cards report them), and the object counts: ``{"object_precision", "object_recall",
    "object_f1", "objects_pred", "objects_true"}``."""
    matches = [match_instances(p, t, iou_threshold) for p, t in zip(preds, truths, strict=True)]
    tp = sum(m.tp for m in matches)
    fp = sum(m.fp for m in matches)
    fn = sum(m.fn for m in matches)
    return {
        "objects_true": int(sum(m.n_true for m in matches)),
        "objects_pred": int(sum(m.n_pred for m in matches)),
        "object_precision": _ratio(tp, tp + fp),
        "object_recall": _ratio(tp, tp + fn),
        "object_f1": _dice_counts(tp, fp, fn),
    }


def _overlap_list(preds, truths):
    preds = [preds] if isinstance(preds, np.ndarray) else list(preds)
    truths = [truths] if isinstance(truths, np.ndarray) else list(truths)
    if len(preds) != len(truths):
        raise ValueError("preds and truths differ in length")
    return [_overlaps(p, t) for p, t in zip(preds, truths, strict=True)]


def _pooled_sa(ious, taus):
    counts = np.zeros((len(taus), 3), np.int64)
    for ov in ious:
        for k, tau in enumerate(taus):
            m = _result(ov, float(tau))
            counts[k] += (m.tp, m.fp, m.fn)
    den = counts.sum(axis=1)
    return np.where(den > 0, counts[:, 0] / np.maximum(den, 1), 1.0)


def segmentation_accuracy(preds, truths, tau=0.5):
    """Segmentation accuracy ``SA(tau) = TP / (TP + FP + FN)``.

    The Data Science Bowl 2018 / StarDist matching score, with counts pooled
    over all image pairs before the ratio; 1.0 if the pooled denominator is
    0 (no objects anywhere).

    Parameters
    ----------
    preds, truths : sequence of array_like of int, or one ndarray each
        Instance label images, paired by position (an ndarray is one image).
    tau : float
        IoU threshold (match if IoU > tau).
    """
    return float(_pooled_sa(_overlap_list(preds, truths), [tau])[0])


def mean_segmentation_accuracy(preds, truths, taus=DEFAULT_TAUS, *, per_tau=False):
    """Mean of :func:`segmentation_accuracy` over IoU thresholds (mSA).

    Parameters
    ----------
    preds, truths : sequence of array_like of int, or one ndarray each
        Instance label images (see :func:`segmentation_accuracy`).
    taus : array_like of float
        Thresholds; default 0.50:0.05:0.95 (rounded, so an IoU of exactly
        0.6 does not match at tau = 0.6).
    per_tau : bool
        Also return the SA value of each tau.

    Returns
    -------
    float, or (float, ndarray) if ``per_tau``
    """
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    sa = _pooled_sa(_overlap_list(preds, truths), taus)  # overlaps once per image
    return (float(sa.mean()), sa) if per_tau else float(sa.mean())
