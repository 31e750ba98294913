"""Training inputs drawn from loaded samples (:mod:`.datasets`).

Samples zoomed to the object size a model learns (:func:`zoom_sample`,
:func:`scale_zooms`), histogram matching to the brightest training image
(:func:`match_to_brightest`), and the :class:`PatchSampler` that draws
augmented patches with positives and negatives of every class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .augment import AugmentSpec, appearance, dihedral, draw_zoom, resample_patch
from .datasets import Sample, _annotated, _resample_labels, experiment_of
from .images import read_array
from .model_input import InputSpec


def zoom_sample(sample: Sample, zoom: float, soft=()) -> Sample:
    """``sample`` resampled by ``zoom`` (> 1 enlarges), as :func:`load_folder` resamples images.

    The image bilinearly (area-averaged when shrinking), 0/1 targets bilinearly
    then at 0.5, ``soft`` channels (distances; a tuple or ``{distance channel:
    class channel}``) bilinearly, ``valid`` so that a pixel is known only where
    all it covers was, instance labels by nearest neighbour.
    """
    from .model_input import resize_planes, zoomed_shape

    if zoom == 1.0:
        return sample
    shape = zoomed_shape(sample.shape, zoom)
    x = resize_planes(sample.image, shape)
    t = resize_planes(sample.target.astype(np.float32), shape, anti_alias=False)
    v = resize_planes(sample.valid.astype(np.float32), shape, anti_alias=False) > 0.999
    binary = np.ones(t.shape[0], bool)
    binary[list(soft)] = False
    t = np.where(binary[:, None, None], t >= 0.5, t).astype(sample.target.dtype)
    for d, c in soft.items() if isinstance(soft, Mapping) else ():
        if c is not None:  # a flow (None) keeps its resampled values
            t[d][t[c] == 0] = 0
    labels = (
        {c: _resample_labels(m, shape) for c, m in sample.labels.items()} if sample.labels else None
    )
    return Sample(sample.name, x, t, v, sample.group, labels)


def scale_zooms(
    folder: str | Path,
    reference: str,
    diameter: float | None,
    *,
    group_of: Callable[[str], str] = experiment_of,
    per: str = "group",
) -> tuple[dict[str, float], dict[str, float]]:
    """Zooms that bring the ``reference`` objects of a training folder to ``diameter`` px.

    The median object diameter is measured per experiment (``per="group"``:
    one zoom for all images of an experiment, robust to a field with three
    cells) or per image (``per="image"``); images without that class's mask
    take their experiment's zoom, or none.

    Returns
    -------
    (zooms, diameters)
        ``{id: zoom}`` and ``{id: measured median diameter at the data's own
        scale}`` (only ids with objects). With ``diameter`` None every zoom is 1.
    """
    from .scale import object_diameters

    if per not in ("group", "image"):
        raise ValueError(f"scale per must be 'group' or 'image', not {per!r}")
    per_image: dict[str, np.ndarray] = {}
    groups: dict[str, list[str]] = {}
    for _, stem, masks in _annotated(folder, [reference], keep_unannotated=True):
        groups.setdefault(group_of(stem), []).append(stem)
        if masks[reference] is not None:
            d = object_diameters(read_array(masks[reference]))
            if d.size:
                per_image[stem] = d
    measured = {k: float(np.median(v)) for k, v in per_image.items()}
    zooms: dict[str, float] = {}
    for stems in groups.values():
        pooled = [per_image[k] for k in stems if k in per_image]
        g_diam = float(np.median(np.concatenate(pooled))) if pooled else None
        for k in stems:
            d = measured.get(k) if per == "image" and k in measured else g_diam
            zooms[k] = diameter / d if diameter and d else 1.0
    return zooms, measured


def match_to_brightest(
    train: Sequence[Sample], val: Sequence[Sample], spec: InputSpec, *, n_quantiles: int = 256
) -> tuple[list[Sample], list[Sample], InputSpec]:
    """Aydın et al.'s (2022) histogram matching: every image onto the brightest training image.

    The reference is the training image with the highest mean intensity (after
    the spec's median filter and normalisation), stored as ``n_quantiles``
    quantiles in the returned spec, so that images segmented later are matched
    to the same reference (:func:`model_input.to_model_input`). Validation images
    are matched too, but never chosen as the reference.
    """
    from dataclasses import replace

    from .model_input import match_histogram

    if not train:
        raise ValueError("histogram matching needs training images to choose a reference from")
    brightest = max(train, key=lambda s: float(s.image.mean()))
    # rounded as config.json stores it, so training sees what inference will
    ref = np.round(np.quantile(brightest.image, np.linspace(0, 1, n_quantiles)), 6)

    def matched(samples):
        return [replace(s, image=match_histogram(s.image, ref)) for s in samples]

    spec = replace(spec, histogram_reference=tuple(float(v) for v in ref))
    return matched(train), matched(val), spec


# ---------------------------------------------------------------- patches for training


def _window(a: np.ndarray, y0: int, x0: int, side: int, fill=None) -> np.ndarray:
    """``a[:, y0:y0+side, x0:x0+side]``, padded where the window leaves the array.

    The padding mirrors the array (``fill`` None: the image) or is ``fill``
    (targets 0, valid False: the padding is unknown).
    """
    h, w = a.shape[-2:]
    ya, xa = max(0, y0), max(0, x0)
    yb, xb = min(h, y0 + side), min(w, x0 + side)
    out = a[:, ya:yb, xa:xb]
    pads = ((0, 0), (ya - y0, y0 + side - yb), (xa - x0, x0 + side - xb))
    if any(p for pair in pads for p in pair):
        if fill is None:
            out = np.pad(out, pads, mode="symmetric")
        else:
            out = np.pad(out, pads, constant_values=fill)
    return out


class PatchSampler:
    """Draws training patches with positives and negatives of every class (Rahkonen et al. 2020).

    Each patch is, with probability ``positive_fraction``, placed so that it
    contains a random *positive* pixel of a random class (class first, then an
    image that has it, then the pixel: rare classes are seen as often as common
    ones); with probability ``negative_fraction`` around a random known
    *background* pixel of a random class; otherwise uniformly. The chosen
    pixel lies anywhere in the central 3/4 of the patch, not always at its
    centre. Where a patch leaves its image (images smaller than the patch, or a
    zoomed-out window) the image is mirrored and the padding marked unknown.

    With a zoom in the :class:`~.augment.AugmentSpec`, a window of
    ``patch / zoom`` pixels is cut and resampled to ``patch``² (objects appear
    ``zoom`` times their size), before the flips and the appearance changes.

    Parameters
    ----------
    samples
        Training samples.
    patch
        Patch side in pixels.
    rng
        The numpy random generator (all randomness of sampling and augmentation).
    positive_fraction, negative_fraction
        Shares of positive- and background-centred patches.
    augment
        ``True`` (flips and mild intensity changes), ``False``, or an
        :class:`~.augment.AugmentSpec`.
    max_points
        Candidate pixels kept per image and class (a random subset), which bounds memory.
    soft
        Output channels holding distances rather than 0/1 masks (resampled as
        such): a tuple, or ``{distance channel: its class channel}`` (see
        :func:`~.augment.resample_patch`).
    flows
        ``(row channel, column channel)`` pairs of flow channels, turned with
        each flip and rotation (:func:`~.augment.turn_flows`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        patch: int,
        rng: np.random.Generator,
        *,
        positive_fraction: float = 0.5,
        negative_fraction: float = 0.25,
        augment: bool | AugmentSpec = True,
        max_points: int = 20000,
        soft=(),
        flows=(),
    ):
        if not samples:
            raise ValueError("no training samples")
        self.patch, self.rng = patch, rng
        self.spec = AugmentSpec.from_config(augment)
        self.soft = dict(soft) if isinstance(soft, Mapping) else tuple(soft)
        self.flows = tuple(tuple(p) for p in flows)
        self.fractions = (positive_fraction, negative_fraction)
        self.items = [(s.image, s.target, s.valid) for s in samples]
        k = self.items[0][1].shape[0]
        # candidates[kind][class]: (image index, flat pixel indices) of images that have any
        self.candidates: dict[str, list[list[tuple[int, np.ndarray]]]] = {}
        for kind in ("pos", "neg"):
            per_class: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(k)]
            for i, (_, t, v) in enumerate(self.items):
                for c in range(k):
                    m = v[c] & (t[c] > 0) if kind == "pos" else v[c] & (t[c] == 0)
                    idx = np.flatnonzero(m)
                    if idx.size > max_points:
                        idx = np.sort(rng.choice(idx, max_points, replace=False))
                    if idx.size:
                        per_class[c].append((i, idx))
            self.candidates[kind] = per_class

    def _origin(self, size: int, side: int, at: int | None) -> int:
        lo, hi = min(0, size - side), max(0, size - side)
        if at is None:
            return int(self.rng.integers(lo, hi + 1))
        offset = int(self.rng.integers(side // 8, side - side // 8))
        return int(np.clip(at - offset, lo, hi))

    def draw(self, for_class: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: image ``(C, P, P)`` float32, target ``(K, P, P)``, valid bool.

        ``for_class``: positives and negatives of this class only (Rahkonen et al. 2020 draws
        each per-class network's patches for its own class).
        """
        u = self.rng.random()
        kind = "pos" if u < self.fractions[0] else "neg" if u < sum(self.fractions) else None
        classes = [
            c
            for c, lst in enumerate(self.candidates.get(kind, []))
            if lst and for_class in (None, c)
        ]
        at = None
        if kind is not None and classes:
            lst = self.candidates[kind][classes[int(self.rng.integers(len(classes)))]]
            i, idx = lst[int(self.rng.integers(len(lst)))]
            at = divmod(int(idx[int(self.rng.integers(idx.size))]), self.items[i][0].shape[-1])
        else:
            i = int(self.rng.integers(len(self.items)))
        x, t, v = self.items[i]
        zoom = draw_zoom(self.spec, self.rng)
        side = max(8, int(round(self.patch / zoom)))
        y0 = self._origin(x.shape[-2], side, None if at is None else at[0])
        x0 = self._origin(x.shape[-1], side, None if at is None else at[1])
        x = _window(x, y0, x0, side)
        t = _window(t, y0, x0, side, 0)
        v = _window(v, y0, x0, side, False)
        if side != self.patch:
            x, t, v = resample_patch(x, t, v, self.patch, self.soft)
        if self.spec.dihedral:
            x, t, v = dihedral((x, t, v), self.rng, self.flows)
        x = appearance(x, self.spec, self.rng)
        return (
            np.ascontiguousarray(x, np.float32),
            np.ascontiguousarray(t, np.float32 if t.dtype.kind == "f" else t.dtype),
            np.ascontiguousarray(v),
        )

    def batch(
        self, n: int, for_class: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` patches stacked: ``(n, C, P, P)``, ``(n, K, P, P)``, ``(n, K, P, P)``."""
        xs, ts, vs = zip(*(self.draw(for_class) for _ in range(n)), strict=True)
        return np.stack(xs), np.stack(ts), np.stack(vs)
