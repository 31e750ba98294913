"""Training augmentation: geometry, scale, and the looks of microscopes the model never saw.

A model trained on one microscope's images learns that microscope: its
magnification, its contrast, its background. A user's plate differs in all of
them, so training patches are drawn at random zooms and given random looks
(:class:`AugmentSpec`); every one of these is measured on held-out
experiments in ``benchmarks/augmentations.py``.

All intensity operations act on the normalised patch (percentile-normalised:
background and cells span about 0…1), as the network sees it:

``illumination``
    a smooth random field added to the patch (uneven illumination, a bright
    corner, a vignette), with the patch's own contrast squeezed by up to 70 %
    as an image's normalisation squeezes it when a gradient takes up the range;
``contrast``
    contrast lowered to as little as 15 %, and/or the patch quantised to as few
    as 4 grey levels (a pale 8-bit image stretched by normalisation);
``blur``
    Gaussian defocus, σ 0.5–2.5 px;
``noise``
    Gaussian and signal-dependent (shot) noise;
``invert``
    intensities mirrored, so dark halos become bright ones (phase contrast
    on the other side of focus, bright field above or below focus);
``intensity``
    the mild gamma and brightness/contrast changes every model had before;
``zoom``
    the patch is cut at a random size and resampled, so objects appear from
    ``zoom[0]`` to ``zoom[1]`` times their size (log-uniform).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

APPEARANCE = {"illumination": 0.3, "contrast": 0.3, "blur": 0.25, "noise": 0.3, "invert": 0.1}
"""Probabilities of the appearance operations when ``appearance: true`` is asked for."""


@dataclass(frozen=True)
class AugmentSpec:
    """Which augmentations a training run applies to each patch, and how often."""

    dihedral: bool = True
    """Random flips and 90° rotations."""
    intensity: bool = True
    """Mild gamma (0.7–1.4) and brightness/contrast (×0.8–1.25, ±0.1), half the time each."""
    zoom: tuple[float, float] = (1.0, 1.0)
    """Range of object zoom (log-uniform); (1, 1) for none."""
    zoom_p: float = 0.8
    """Share of patches that are zoomed (the others keep the data's own scale)."""
    illumination: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    invert: float = 0.0

    @classmethod
    def from_config(cls, value) -> AugmentSpec:
        """From a YAML/JSON value: ``true`` (flips and intensity), ``false`` (nothing), or a
        mapping of fields, where ``appearance: true`` sets every appearance operation to
        its default probability (:data:`APPEARANCE`) unless given."""
        if isinstance(value, AugmentSpec):
            return value
        if value is True or value is None:
            return cls()
        if value is False:
            return cls(dihedral=False, intensity=False)
        if not isinstance(value, dict):
            raise ValueError(f"augment must be true, false or a mapping, not {value!r}")
        d = dict(value)
        if d.pop("appearance", False):
            d = {**APPEARANCE, **d}
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown augmentation(s) {sorted(unknown)}; known: "
                f"{', '.join(sorted(known | {'appearance'}))}"
            )
        if "zoom" in d:
            lo, hi = (float(v) for v in d["zoom"])
            if not 0 < lo <= hi:
                raise ValueError(
                    f"augment zoom must be [low, high] with 0 < low <= high, not {d['zoom']}"
                )
            d["zoom"] = (lo, hi)
        for k in ("zoom_p", *APPEARANCE):
            if k in d and not 0.0 <= float(d[k]) <= 1.0:
                raise ValueError(f"augment {k} is a probability in [0, 1], not {d[k]}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in fields(self)
        }

    @property
    def zooms(self) -> bool:
        return self.zoom != (1.0, 1.0) and self.zoom_p > 0


def draw_zoom(spec: AugmentSpec, rng: np.random.Generator) -> float:
    """A random zoom for one patch (1.0 for an unzoomed one)."""
    if not spec.zooms or rng.random() >= spec.zoom_p:
        return 1.0
    lo, hi = spec.zoom
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def dihedral(arrays, rng: np.random.Generator, flows=()):
    """The same random flip / 90° rotation of the last two axes of every array.

    ``flows``: ``(row channel, column channel)`` pairs of flow vectors in the
    second array (the target), turned with the image (:func:`turn_flows`).
    """
    k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(a[..., ::-1] if flip else a)
    if flows and len(out) > 1:
        out[1] = turn_flows(out[1], flows, k, flip)
    return out


def turn_flows(t: np.ndarray, pairs, k: int, flip: bool, centre: float = 0.5) -> np.ndarray:
    """Flow channels of ``t`` after ``np.rot90(·, k)`` and an optional left-right flip.

    The pixels have moved already; this turns the vectors they hold. A vector
    (dy, dx) stored as ``centre + v / 2`` becomes (-dx, dy) per quarter turn
    (``np.rot90`` turns counter-clockwise) and (dy, -dx) with the flip.
    """
    if not pairs:
        return t
    t = np.array(t)
    for cy, cx in pairs:
        dy, dx = t[cy] - centre, t[cx] - centre
        for _ in range(k % 4):
            dy, dx = -dx, dy
        if flip:
            dx = -dx
        t[cy], t[cx] = centre + dy, centre + dx
    return t


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random smooth field in about [-1, 1]: a 3×3 to 5×5 grid, upsampled bicubically."""
    from scipy.ndimage import zoom

    n = int(rng.integers(3, 6))
    grid = rng.uniform(-1.0, 1.0, (n, n)).astype(np.float32)
    f = zoom(grid, (shape[0] / n, shape[1] / n), order=3, mode="nearest", grid_mode=True)
    return f[: shape[0], : shape[1]]


def appearance(x: np.ndarray, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """Apply the intensity augmentations of ``spec`` to one ``(C, P, P)`` normalised patch."""
    x = np.array(x, np.float32)
    if spec.illumination and rng.random() < spec.illumination:
        squeeze = rng.uniform(0.3, 1.0)
        amp = rng.uniform(0.2, 1.0)
        x = x * squeeze + amp * _smooth_field(x.shape[1:], rng)[None]
    if spec.contrast and rng.random() < spec.contrast:
        if rng.random() < 0.7:
            c = float(np.exp(rng.uniform(np.log(0.15), np.log(1.0))))
            m = float(x.mean())
            x = m + (x - m) * c
        if rng.random() < 0.5:  # a few grey levels over the patch's range
            levels = int(np.exp(rng.uniform(np.log(4), np.log(48))))
            lo, hi = np.percentile(x, [0.5, 99.5])
            if hi > lo:
                q = np.round((np.clip(x, lo, hi) - lo) / (hi - lo) * (levels - 1))
                x = (q / (levels - 1) * (hi - lo) + lo).astype(np.float32)
    if spec.blur and rng.random() < spec.blur:
        from scipy.ndimage import gaussian_filter

        s = rng.uniform(0.5, 2.5)
        x = np.stack([gaussian_filter(c, s, mode="reflect") for c in x])
    if spec.noise and rng.random() < spec.noise:
        sd = float(np.exp(rng.uniform(np.log(0.01), np.log(0.15))))
        shot = float(rng.uniform(0.0, 0.1))
        n = rng.standard_normal(x.shape).astype(np.float32)
        x = x + n * (sd + shot * np.sqrt(np.clip(x, 0.0, None)))
    if spec.intensity:
        if rng.random() < 0.5:  # gamma on the [0, 1] part; the excess stays linear
            gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
            c = np.clip(x, 0.0, 1.0)
            x = c**gamma + (x - c)
        if rng.random() < 0.5:
            a = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
            x = x * a + float(rng.uniform(-0.1, 0.1))
    if spec.invert and rng.random() < spec.invert:
        x = 1.0 - x
    return x.astype(np.float32, copy=False)


def resample_patch(
    x: np.ndarray, t: np.ndarray, v: np.ndarray, size: int, soft=()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample a square window (image, target, valid) to ``size``² pixels.

    The image bilinearly (area-averaged when shrinking), 0/1 target channels
    bilinearly then at 0.5, ``soft`` (distance) channels bilinearly, and
    ``valid`` so that a resampled pixel is known only where everything it
    covers was. ``soft`` is a tuple of channels, or a mapping ``{distance
    channel: its class channel}``: then a distance is zeroed where its class's
    resampled mask is background, so the two keep the same outline (a channel
    mapped to None, a flow, is resampled and kept as it is).
    """
    from skimage.transform import resize

    s = x.shape[-1]
    if s == size:
        return x, t, v
    shrink = size < s
    xr = resize(
        x, (x.shape[0], size, size), order=1, anti_aliasing=shrink, preserve_range=True
    ).astype(np.float32)
    tv = np.concatenate([t.astype(np.float32), v.astype(np.float32)])
    tv = resize(tv, (tv.shape[0], size, size), order=1, anti_aliasing=False, preserve_range=True)
    k = t.shape[0]
    tr, vr = tv[:k], tv[k:] > 0.999
    binary = np.ones(k, bool)
    binary[list(soft)] = False
    tr = np.where(binary[:, None, None], tr >= 0.5, tr).astype(t.dtype)
    for d, c in soft.items() if isinstance(soft, dict) else ():
        if c is not None:
            tr[d][tr[c] == 0] = 0
    return xr, tr, vr
