"""Scoring a network on validation images while it trains.

Validation images are whole images (or the held-out squares of a user's
reviewed pixels), predicted tile by tile as ``segment`` predicts them, and
scored over their valid pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..bundle_config import BundleConfig
from ..datasets import Sample
from ..device import to_device
from ..model_input import fit_shape, resize_planes
from ..nets import output_stride
from ..postprocess import above, binary_mask
from ..segment import predict_whole
from ..tiling import predict_tiled, run_to_end


@dataclass(frozen=True)
class Validation:
    """Per-class scores of one validation pass."""

    dice: dict[str, float]
    """Dice pooled over all images (intersections and sizes summed)."""
    per_image: dict[str, float]
    """Mean of per-image Dice (empty truth and empty prediction count as 1)."""
    objects: dict[str, float] = field(default_factory=dict)
    """SA(0.5) of the counted classes, pooled over images (only when asked for)."""
    sizes: dict[str, float] = field(default_factory=dict)
    """Per counted class, how much larger the model draws its objects than the truth: the
    geometric mean over images of (median predicted diameter / median true diameter), at
    the training scale (only with objects). The scale estimate corrects for it
    (:attr:`bundle_config.ScaleSpec.bias`)."""
    seeds: dict[str, dict[float, float]] = field(default_factory=dict)
    """Per class separated by a distance map, SA(0.5) with each candidate seed threshold
    (only when :func:`score` is given ``seeds``)."""

    def score(self, select_by: str = "dice") -> float:
        """The number that picks the kept weights (see ``TrainConfig.select_by``)."""
        values = list(self.dice.values())
        if select_by == "objects":
            values += list(self.objects.values())
        return float(np.mean(values)) if values else 0.0


def validate(
    net, val: Sequence[Sample], cfg: BundleConfig, *, tile: int, device: str, batch_size: int = 4
) -> tuple[dict[str, float], dict[str, float]]:
    """``(pooled Dice, mean per-image Dice)`` per class of ``net`` on ``val`` (:func:`score`)."""
    v = score(net, val, cfg, tile=tile, device=device, batch_size=batch_size)
    return v.dice, v.per_image


def score(
    net,
    val: Sequence[Sample],
    cfg: BundleConfig,
    *,
    tile: int,
    device: str,
    batch_size: int = 4,
    objects: bool = False,
    seeds: Sequence[float] = (),
) -> Validation:
    """Per-class Dice (and, with ``objects``, SA(0.5)) of ``net`` on full validation images.

    A model with ``InputSpec.resize_to`` is validated on the resized images. A
    ``largest_only`` class (one object per image) is scored after its
    post-processing, which removes everything but one object: its raw map
    would be judged on specks the model is not asked to avoid. Other classes
    are scored on the thresholded probabilities. Classes valid nowhere are
    left out. With ``objects``, the counted classes' instances (made as
    ``segment`` makes them) are matched to the truth's connected components
    (or its instances, when a border or distance channel holds them) in
    images where the class is valid everywhere.
    """
    import torch

    from .. import object_metrics as OM
    from ..segmentation import Segmentation
    from ..targets import as_labels

    net.eval()
    if cfg.input.resize_to:  # the model sees whole images at this size (Sadanandan et al. 2017)
        val = resize_samples(val, cfg.input.resize_to)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(net(to_device(batch, device))).cpu().numpy()

    stride = output_stride(cfg.architecture, cfg.params)
    k = len(cfg.classes)
    sums = np.zeros((3, k))  # intersection, predicted, true
    per_image: list[list[float]] = [[] for _ in range(k)]
    matched: dict[str, list] = {c.name: [[], []] for c in cfg.classes if c.instances}
    seeded = {
        c.name: {float(t): [] for t in seeds}
        for c in cfg.classes
        if objects and c.instances and getattr(c, "separate", "") == "distance"
    }
    for s in val:
        # no need to pad a small image to a big tile
        t = min(tile, -(-max(s.shape) // stride) * stride)
        if cfg.input.resize_to:  # as segment() predicts: the whole image in one pass
            gen = predict_whole(s.image, predict, align=stride)
        else:
            gen = predict_tiled(
                s.image, predict, tile=t, overlap=cfg.overlap, batch_size=batch_size, align=stride
            )
        prob = run_to_end(gen)
        seg = (
            Segmentation(prob, cfg.classes, cfg.derived, diameter=cfg.scale.diameter)
            if objects
            else None
        )
        for c, spec in enumerate(cfg.classes):
            v = s.valid[c]
            if not v.any():
                continue
            m = above(prob[c], spec.threshold)
            if getattr(spec, "largest_only", False):  # scored as in Sadanandan 2017: cleaned
                m = binary_mask(
                    prob[c],
                    threshold=spec.threshold,
                    fill_holes=spec.fill_holes,
                    min_size=spec.min_size,
                    largest_only=True,
                )
            m, truth = m & v, (s.target[c] > 0) & v
            i, p, q = np.count_nonzero(m & truth), np.count_nonzero(m), np.count_nonzero(truth)
            sums[:, c] += (i, p, q)
            per_image[c].append(2 * i / (p + q) if p + q else 1.0)
            if seg is not None and spec.name in matched and v.all():
                mask = seg.mask(spec.name)  # once: the seeds change the split, not the mask
                matched[spec.name][0].append(seg.instances(spec.name, mask))
                matched[spec.name][1].append(_truth_labels(s, c, cfg, as_labels))
                for t, preds in seeded.get(spec.name, {}).items():
                    preds.append(seg.with_seeds({spec.name: t}).instances(spec.name, mask))
    pooled, mean = {}, {}
    for c, spec in enumerate(cfg.classes):
        if per_image[c]:
            i, p, q = sums[:, c]
            pooled[spec.name] = float(2 * i / (p + q)) if p + q else 1.0
            mean[spec.name] = float(np.mean(per_image[c]))
    sa = {
        name: float(OM.segmentation_accuracy(preds, trues, 0.5))
        for name, (preds, trues) in matched.items()
        if preds
    }
    sizes = {name: r for name, (preds, trues) in matched.items() if (r := size_ratio(preds, trues))}
    by_seed = {
        name: {t: float(OM.segmentation_accuracy(p, matched[name][1], 0.5)) for t, p in by.items()}
        for name, by in seeded.items()
        if matched[name][0]
    }
    return Validation(pooled, mean, sa, sizes, by_seed)


def choose_seeds(cfg: BundleConfig, v: Validation) -> tuple[BundleConfig, dict]:
    """``cfg`` with each distance-separated class's seed threshold set to the one of
    :attr:`Validation.seeds` that scored the best SA(0.5) on the validation images
    (a tie keeps the class's own threshold, or the candidate nearest to it, the lower of
    two equally near), and what was chosen from what: ``{class: {"chosen": t, "sa": {t:
    SA}}}``."""
    from dataclasses import replace

    from ..segmentation import seeded_classes

    chosen = {}
    for spec in cfg.classes:
        by = v.seeds.get(spec.name)
        if not by:
            continue
        own = spec.seed_threshold
        best = max(by, key=lambda t: (round(by[t], 9), -round(abs(t - own), 9), -t))
        chosen[spec.name] = {"chosen": best, "sa": {str(t): round(x, 4) for t, x in by.items()}}
    classes = seeded_classes(cfg.classes, {n: c["chosen"] for n, c in chosen.items()})
    return replace(cfg, classes=classes), chosen


def size_ratio(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray]) -> float | None:
    """Geometric mean over images of (median predicted / median true object diameter), over
    the images where both have objects; None when there is none."""
    from ..scale import object_diameters

    logs = []
    for p, t in zip(preds, trues, strict=True):
        dp, dt = object_diameters(p), object_diameters(t)
        if dp.size and dt.size:
            logs.append(np.log(np.median(dp) / np.median(dt)))
    return round(float(np.exp(np.mean(logs))), 4) if logs else None


def _truth_labels(s: Sample, c: int, cfg: BundleConfig, as_labels) -> np.ndarray:
    """The true objects of class ``c``: the sample's instance labels, else its components."""
    if s.labels and c in s.labels:
        return s.labels[c]
    return as_labels(s.target[c] > 0)


def resize_samples(samples: Sequence[Sample], size: int) -> list[Sample]:
    """Samples resized so that their longer side is ``size`` (``InputSpec.resize_to``).

    Images bilinearly with area averaging (as ``segment`` resizes them);
    targets by majority (area fraction ≥ 0.5); a resized pixel is valid only
    where all it covers was. Samples already at that size are kept as they
    are. A border channel (``separate: boundary``) is resized like a mask, so
    its 1-2 pixel borders thin out when shrunk: give such models samples at
    the network's size.
    """
    out = []
    for s in samples:
        shape = fit_shape(s.shape, size)
        if shape == tuple(s.shape):
            out.append(s)
            continue
        target = resize_planes(s.target.astype(np.float32), shape) >= 0.5
        valid = resize_planes(s.valid.astype(np.float32), shape) > 0.999
        out.append(
            Sample(s.name, resize_planes(s.image, shape), target.astype(np.uint8), valid, s.group)
        )
    return out


def with_seeds_chosen(bundle, val: Sequence[Sample], candidates: Sequence[float], device="cpu"):
    """``bundle`` with its distance seed thresholds chosen on ``val`` (its validation images)
    as ``TrainConfig.choose_seeds`` chooses them at the end of a run, for a bundle trained
    without that option; returns ``(bundle, chosen)`` (see :func:`choose_seeds`), the
    choice also recorded in its lineage (``metrics.val_seeds``)."""
    cfg = bundle.config
    v = score(
        bundle.network(device),
        val,
        cfg,
        tile=cfg.tile,
        device=device,
        objects=True,
        seeds=tuple(candidates),
    )
    new, chosen = choose_seeds(cfg, v)
    lineage = dict(cfg.lineage)
    lineage["metrics"] = {**lineage.get("metrics", {}), "val_seeds": chosen}
    return bundle.with_config(classes=new.classes, lineage=lineage), chosen
