"""Drawing primitives of the synthetic images (:mod:`.culture`, :mod:`.spheroid`):
a window around a point, periodic radius perturbations, star-shaped blobs and tapered
spindles, and wide blurs computed on a coarse grid and upsampled bilinearly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# --------------------------------------------------------------- geometry


def _window(shape, cy, cx, half):
    """Slices of the image around (cy, cx) and broadcastable offsets dy, dx."""
    h, w = shape
    y0, y1 = max(int(cy - half), 0), min(int(cy + half) + 2, h)
    x0, x1 = max(int(cx - half), 0), min(int(cx + half) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    return (slice(y0, y1), slice(x0, x1)), dy, dx


def _harmonics(rng, amp, ks, n=1024):
    """A smooth periodic radius factor 1 + Σ a_k cos(kθ + φ_k), as a function of θ.

    Tabulated once and interpolated: evaluating the cosines on every pixel of a
    large spheroid's window was the slowest part of drawing.
    """
    a = rng.normal(0, amp / np.sqrt(ks))
    p = rng.uniform(0, 2 * np.pi, len(ks))
    grid = np.linspace(-np.pi, np.pi, n + 1)  # closed: table[n] == table[0]
    table = (1 + (a[:, None] * np.cos(np.outer(ks, grid) + p[:, None])).sum(0)).astype(np.float32)

    def fn(t):
        x = (np.asarray(t, np.float32) + np.float32(np.pi)) * np.float32(n / (2 * np.pi))
        i = np.clip(x.astype(np.int32), 0, n - 1)
        return table[i] + (table[i + 1] - table[i]) * (x - i)

    return fn


def _polar(dy, dx, elong, angle):
    """Radius and angle in the frame of an ellipse (major axis along ``angle``)."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = dx * c + dy * s, (-dx * s + dy * c) * elong
    return np.hypot(u, v), np.arctan2(v, u)


def _star(dy, dx, radius, elong, angle, shape_fn):
    """Inside test and normalised radius rho of a perturbed ellipse (rho <= 1 inside)."""
    d, t = _polar(dy, dx, elong, angle)
    rho = d / (radius * shape_fn(t))
    return rho <= 1, rho


def _spindle(dy, dx, length, width, angle, bend, wave, one_sided=False):
    """A tapered, slightly bent rod along ``angle``: (inside, across-profile in [0, 1]).

    ``one_sided`` makes a spike: full width at u = 0, a point at u = length.
    """
    c, s = np.cos(angle), np.sin(angle)
    u, v = dx * c + dy * s, -dx * s + dy * c
    v = v - bend * u * u - wave[0] * np.sin(u / wave[1] + wave[2])
    if one_sided:
        t = np.clip(1 - u / length, 0, None) * (u >= -width)
        half = width * np.minimum(t, 1) ** 0.8
    else:
        half = width * np.clip(1 - (2 * u / length) ** 2, 0, None) ** 0.7
    inside = np.abs(v) < half
    return inside, np.sqrt(np.clip(1 - (v / np.maximum(half, 1e-3)) ** 2, 0, 1))


# --------------------------------------------------------------- resampling


def _block_mean(a, f):
    h, w = a.shape
    a = np.pad(a, ((0, -h % f), (0, -w % f)), mode="edge")
    return a.reshape(a.shape[0] // f, f, a.shape[1] // f, f).mean(axis=(1, 3))


def _upsample(a, f, shape, offset=0.0):
    """Bilinear upsampling where full-res pixel y sits at coarse coordinate (y - offset) / f."""

    def axis(n_out, n_in):
        c = np.clip((np.arange(n_out) - offset) / f, 0, n_in - 1)
        i0 = np.floor(c).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (c - i0).astype(np.float32)

    (y0, y1, ty), (x0, x1, tx) = axis(shape[0], a.shape[0]), axis(shape[1], a.shape[1])
    a = a[y0] * (1 - ty)[:, None] + a[y1] * ty[:, None]
    return a[:, x0] * (1 - tx) + a[:, x1] * tx


def _smooth(a, sigma, f=4):
    """A wide Gaussian blur computed on a coarse grid (wide blurs are slow at full size)."""
    coarse = ndi.gaussian_filter(_block_mean(a, f), sigma / f, mode="nearest")
    return _upsample(coarse.astype(np.float32), f, a.shape, offset=(f - 1) / 2)
