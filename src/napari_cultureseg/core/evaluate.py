"""Evaluate a bundle on images with ground truth: the figures of the model cards.

Per class, over a list of images:

* pixels (pooled over all images): sensitivity, specificity, Dice, AUC with a
  95 % confidence interval (Rahkonen et al. 2020), and the Dice at the threshold chosen on
  the ROC (Youden's J);
* per image: precision, recall, F-score and their mean ± std (Sadanandan et al. 2017);
* objects (classes with ``instances``): precision / recall / F1 at IoU 0.5,
  SA(0.5) = TP / (TP + FP + FN) pooled over images, and mSA over
  τ = 0.50:0.05:0.95 (Data Science Bowl / StarDist matching score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from . import metrics as M
from . import object_metrics as OM
from .bundles import Bundle
from .postprocess import instances as label_components
from .segment import segment
from .tiling import run_to_end


@dataclass
class Truth:
    """One evaluation image: the plane and, per class, its reference mask or labels."""

    name: str
    image: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def truth_from_folder(
    folder, class_names: Iterable[str], *, only: set[str] | None = None
) -> list[Truth]:
    """Read ``<id>_image.*`` and the ``<id>_<class>.tif`` that exist beside it."""
    from pathlib import Path

    import tifffile

    from .images import read_image

    folder = Path(folder)
    out = []
    for path in sorted(folder.glob("*_image.*")):
        name = path.name.split("_image.")[0]
        if only is not None and name not in only:
            continue
        masks = {}
        for c in class_names:
            m = folder / f"{name}_{c}.tif"
            if m.is_file():
                masks[c] = tifffile.imread(m)
        out.append(Truth(name, read_image(path), masks))
    if not out:
        raise ValueError(f"{folder}: no <id>_image.<ext> files with masks to evaluate on")
    return out


def _as_labels(mask: np.ndarray) -> np.ndarray:
    """Instance labels of a reference: kept if it holds instances, else connected components."""
    mask = np.asarray(mask)
    if mask.dtype != bool and mask.max() > 1:
        return mask
    return label_components(mask > 0)


def evaluate(
    bundle: Bundle,
    truths: list[Truth],
    *,
    device: str = "auto",
    on_image: Callable[[str], None] | None = None,
    diameter: str | float | None = "auto",
    tta: int | None = None,
    runtime: str = "auto",
) -> dict:
    """Segment every image and score each class that has a reference.

    Parameters
    ----------
    diameter
        The object size of every image: ``"auto"`` (estimated per image,
        :func:`scale.estimate_diameter`; the default, as for ``cultureseg evaluate``
        and ``segment``), None (segment at the image's own scale),
        ``"truth"`` (the median diameter of the reference class in the image's
        own reference mask: an oracle, for benchmarks only) or a number of pixels.
    tta
        Test-time augmentation copies (see :func:`segment.augmented`); None: the
        model's own (``BundleConfig.tta``), as ``cultureseg segment`` runs it.
    runtime
        ``auto``, ``torch`` or ``onnx`` (see :mod:`.runtimes`).

    Returns
    -------
    dict
        ``{"images": n, "classes": {name: {metric: value}}, "zooms": {image: zoom}}``.
    """
    from .scale import estimate_diameter, median_diameter, zoom_for

    per_class: dict[str, dict[str, list]] = {}
    zooms = {}
    for t in truths:
        if on_image:
            on_image(t.name)
        zoom = 1.0
        sc = bundle.config.scale
        if diameter == "auto":
            zoom = estimate_diameter(bundle, t.image, device=device).zoom
        elif diameter == "truth":
            ref = t.masks.get(sc.reference) if sc.reference else None
            d = median_diameter([ref]) if ref is not None else None
            zoom = zoom_for(sc, diameter=d) if d else 1.0
        elif diameter is not None:
            zoom = zoom_for(sc, diameter=float(diameter))
        zooms[t.name] = round(float(zoom), 4)
        seg = run_to_end(
            segment(bundle, t.image, device=device, zoom=zoom, tta=tta, runtime=runtime)
        )
        masks = seg.masks()
        for k, spec in enumerate(seg.classes):
            if spec.name not in t.masks:
                continue
            ref = np.asarray(t.masks[spec.name]) > 0
            acc = per_class.setdefault(
                spec.name,
                {"prob": [], "truth": [], "pred": [], "pred_labels": [], "true_labels": []},
            )
            acc["prob"].append(seg.probability(k).ravel())
            acc["truth"].append(ref.ravel())
            acc["pred"].append(masks[spec.name])
            if spec.instances:
                acc["pred_labels"].append(seg.instances(spec.name, masks[spec.name]))
                acc["true_labels"].append(_as_labels(t.masks[spec.name]))
        for d in seg.derived:
            if d.name in t.masks:
                acc = per_class.setdefault(d.name, {"pred": [], "truth_masks": []})
                acc["pred"].append(masks[d.name])
                acc.setdefault("truth_masks", []).append(np.asarray(t.masks[d.name]) > 0)
    return {
        "images": len(truths),
        "classes": {n: _score(n, a, bundle) for n, a in per_class.items()},
        "zooms": zooms,
    }


def _score(name: str, acc: dict, bundle: Bundle) -> dict:
    if "prob" not in acc:  # a derived class: masks only
        pred = np.concatenate([p.ravel() for p in acc["pred"]])
        ref = np.concatenate([t.ravel() for t in acc["truth_masks"]])
        return {
            "dice": M.dice(pred, ref),
            "sensitivity": M.sensitivity(pred, ref),
            "specificity": M.specificity(pred, ref),
        }
    prob = np.concatenate(acc["prob"])
    ref = np.concatenate(acc["truth"])
    pred = np.concatenate([p.ravel() for p in acc["pred"]])
    a, lo, hi = M.auc_ci(prob, ref)
    t_roc = M.roc_threshold(prob, ref) if 0 < ref.sum() < ref.size else float("nan")
    prf = M.per_image_prf(
        acc["pred"], [t.reshape(p.shape) for t, p in zip(acc["truth"], acc["pred"], strict=True)]
    )
    stats = M.mean_std_records(prf)
    spec = next(c for c in bundle.config.classes if c.name == name)
    out = {
        "threshold": spec.threshold,
        "sensitivity": M.sensitivity(pred, ref),
        "specificity": M.specificity(pred, ref),
        "dice": M.dice(pred, ref),
        "auc": a,
        "auc_low": lo,
        "auc_high": hi,
        "roc_threshold": t_roc,
        "dice_at_roc_threshold": M.dice(prob >= t_roc, ref) if np.isfinite(t_roc) else float("nan"),
        "precision_mean": stats["precision"][0],
        "precision_std": stats["precision"][1],
        "recall_mean": stats["recall"][0],
        "recall_std": stats["recall"][1],
        "f_score_mean": stats["f_score"][0],
        "f_score_std": stats["f_score"][1],
    }
    if acc["pred_labels"]:
        preds, trues = acc["pred_labels"], acc["true_labels"]
        out.update(OM.pooled_object_prf(preds, trues, 0.5))
        out["sa_0.5"] = OM.segmentation_accuracy(preds, trues, 0.5)
        out["msa"] = OM.mean_segmentation_accuracy(preds, trues)
    return out


COLUMNS = [
    ("dice", "Dice"),
    ("sensitivity", "sens"),
    ("specificity", "spec"),
    ("auc", "AUC"),
    ("dice_at_roc_threshold", "Dice@ROC"),
    ("f_score_mean", "F/img"),
    ("object_f1", "objF1@.5"),
    ("sa_0.5", "SA(.5)"),
    ("msa", "mSA"),
]


def format_table(result: dict) -> str:
    """The metrics as a fixed-width table, one row per class."""
    head = f"{'class':<12}" + "".join(f"{label:>10}" for _, label in COLUMNS)
    rows = [head, "-" * len(head)]
    for name, m in result["classes"].items():
        cells = []
        for key, _ in COLUMNS:
            v = m.get(key)
            cells.append(
                f"{'—':>10}"
                if v is None or (isinstance(v, float) and np.isnan(v))
                else f"{v:>10.3f}"
            )
        rows.append(f"{name:<12}" + "".join(cells))
        if "auc_low" in m:
            rows.append(
                f"{'':<12}  AUC 95% CI [{m['auc_low']:.3f}, {m['auc_high']:.3f}], "
                f"ROC threshold {m['roc_threshold']:.2f}"
            )
    return "\n".join(rows)
