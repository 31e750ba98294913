"""Seeded synthetic phase-contrast cultures with exact ground truth.

The same seed always gives the same image and masks. Cells are drawn as
irregular ellipses; the image is what a phase-contrast microscope makes of
them: a dark, textured body, a bright halo where the optical path changes,
uneven illumination, debris and shot noise. The mask is where the cell bodies
were drawn, exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _blob(rng: np.random.Generator, radius: float, elong: float) -> tuple[np.ndarray, np.ndarray]:
    """Polygon (rows, cols) of an irregular ellipse centred at 0."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    r = radius * (1 + sum(rng.normal(0, 0.08 / k) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5)))
    a = rng.uniform(0, np.pi)
    y, x = r * np.sin(t), elong * r * np.cos(t)
    return y * np.cos(a) + x * np.sin(a), -y * np.sin(a) + x * np.cos(a)


def phase_culture(
    shape: tuple[int, int] = (512, 512),
    *,
    n_cells: int = 40,
    radius: tuple[float, float] = (9.0, 20.0),
    seed: int = 0,
    bit_depth: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """A phase-contrast-looking culture and its cell instances.

    Parameters
    ----------
    shape
        Image size (H, W).
    n_cells
        Number of cells attempted (overlapping placements are skipped).
    radius
        Range of cell radii in pixels.
    seed
        Random seed; the output is a pure function of the arguments.
    bit_depth
        8 or 16: the image dtype.

    Returns
    -------
    image : numpy.ndarray
        ``(H, W)`` uint8 or uint16.
    labels : numpy.ndarray
        ``(H, W)`` uint16 cell instances, 0 = background.
    """
    from skimage.draw import polygon

    rng = np.random.default_rng(seed)
    h, w = shape
    labels = np.zeros(shape, np.uint16)
    n = 0
    for _ in range(n_cells):
        rr, cc = _blob(rng, rng.uniform(*radius), rng.uniform(1.0, 2.2))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r, c = polygon(rr + cy, cc + cx, shape)
        if r.size == 0 or (labels[r, c] > 0).mean() > 0.05:
            continue
        n += 1
        free = labels[r, c] == 0
        labels[r[free], c[free]] = n
    cells = labels > 0
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    illum = 1.0 + 0.15 * np.sin(2.2 * yy + rng.uniform(0, 3)) * np.cos(1.7 * xx + rng.uniform(0, 3))
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape), 2.0)
    edge = ndi.gaussian_filter(cells.astype(float), 1.5)
    halo = ndi.gaussian_filter(cells.astype(float), 4.0) - edge  # bright just outside, dark inside
    debris = ndi.gaussian_filter((rng.random(shape) > 0.9995).astype(float), 1.2) * 8
    img = 0.5 - 0.18 * edge + 0.9 * np.clip(halo, 0, None) + 0.05 * texture * cells - 0.3 * debris
    img = img * illum + rng.normal(0, 0.015, shape)
    img = np.clip(img, 0, 1)
    top = 255 if bit_depth == 8 else 4095  # 12-bit camera in a 16-bit container
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return (img * top).astype(dtype), labels
