"""Seeded synthetic bright-field spheroids in wells (Sadanandan et al. 2017), with exact masks.

Sadanandan et al. (2017) segments one spheroid per
bright-field image of a well, 1080² or 2160² pixels, in an "easy" set
(segmentable with conventional tools) and a "hard" one. Their images are not
public, so the spheroid default model starts from this generator.

One spheroid per well: an ellipse with a low-frequency radial perturbation and
small bumps (the cells at its surface), a darker core and granular texture,
inside a circular well with a dark rim, vignetting towards the rim (meniscus)
and illumination gradients. ``hard`` adds what made Sadanandan et al.'s second set hard:
low contrast, debris and small cell clusters near the spheroid (not part of
the mask), out-of-focus blur, stronger gradients, and spheroids that touch the
well rim. The mask is exactly the drawn spheroid: one star-shaped, hence
connected, region, entirely inside the well and the frame.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .shapes import _harmonics, _smooth, _star, _upsample, _window

DIFFICULTIES = ("easy", "hard")


def _band(rng, shape, sigma):
    """Unit-variance band-pass noise at about ``2·sigma`` pixels: cell-sized grain."""
    n = rng.standard_normal(shape).astype(np.float32)
    b = ndi.gaussian_filter(n, sigma) - ndi.gaussian_filter(n, 2 * sigma)
    return b / (b.std() + 1e-6)


def _place(rng, pts, centre, radius, size, margin, touch):
    """Centre for a spheroid whose outline points (relative) are ``pts``.

    Fully inside the well (``radius`` minus ``margin``) and the frame; with
    ``touch`` it is pushed out along a random direction until it meets the rim.
    """
    direction = rng.uniform(0, 2 * np.pi)
    u = np.array([np.sin(direction), np.cos(direction)])
    reach = radius - margin

    def fits(c):
        q = pts + c
        inside_well = np.hypot(*(q - centre).T).max() <= reach
        return inside_well and q.min() >= margin and q.max() <= size - 1 - margin

    if touch:
        dist = reach - (pts @ u).max()
    else:  # U-bottom wells roll spheroids to the middle, give or take
        dist = abs(rng.normal(0, 0.08 * radius))
    while dist > 0 and not fits(centre + dist * u):
        dist -= 1.0
    c = centre + max(dist, 0.0) * u
    if not fits(c):
        raise ValueError("spheroid does not fit in the well")  # guarded by the size limits
    return c


def spheroid_well(
    size: int = 1080,
    *,
    seed: int = 0,
    difficulty: str = "easy",
) -> tuple[np.ndarray, np.ndarray]:
    """One bright-field spheroid in a well, and its exact mask.

    Parameters
    ----------
    size
        Side of the square image; Sadanandan et al. 2017 has 1080 and 2160 (any size >= 64
        works; object sizes scale with it).
    seed
        Random seed; the output is a pure function of the arguments.
    difficulty
        ``"easy"`` (Sadanandan et al.'s dataset 1: clear, centred, even light) or
        ``"hard"`` (dataset 2: low contrast, debris and cell clusters around,
        defocus, strong gradients, spheroids touching the rim).

    Returns
    -------
    image : numpy.ndarray
        ``(size, size)`` uint8.
    mask : numpy.ndarray
        ``(size, size)`` bool, one connected spheroid inside the well.

    Examples
    --------
    >>> image, mask = spheroid_well(256, seed=3, difficulty="hard")
    >>> image.dtype, mask.shape
    (dtype('uint8'), (256, 256))
    """
    image, mask, _ = _spheroid_well(size, seed, difficulty)
    return image, mask


def _spheroid_well(size, seed, difficulty):
    """:func:`spheroid_well`, and the well: ``{"centre": (y, x), "radius": r}``."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    hard = difficulty == "hard"
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(hard)]))
    s = size / 1080  # lengths below are for a 1080² frame
    shape = (size, size)

    # ---- the well: a circle roughly filling the frame
    centre = size / 2 + rng.normal(0, 0.025 * size, 2)
    well_r = rng.uniform(0.44, 0.52) * size
    rim_w = rng.uniform(8, 16) * s
    f = 8 if size >= 512 else 2  # smooth fields are computed on a coarse grid
    yc = (np.arange(-(-size // f)) * f + (f - 1) / 2)[:, None] - centre[0]
    xc = (np.arange(-(-size // f)) * f + (f - 1) / 2)[None, :] - centre[1]
    d = np.minimum(np.hypot(yc, xc) / well_r, 1.0)  # 1 at the rim (and beyond)
    fall = rng.uniform(0.25, 0.45) * (1.4 if hard else 1.0)
    bg = 1 - fall * np.clip(d, 0, 1) ** rng.uniform(3, 6)  # meniscus: darker towards the rim
    grad = rng.normal(0, 0.22 if hard else 0.07, 2)
    bg = bg * (1 + grad[0] * yc / size + grad[1] * xc / size)
    bg = _upsample(bg.astype(np.float32), f, shape, offset=(f - 1) / 2)
    yy = np.arange(size, dtype=np.float32)[:, None] - np.float32(centre[0])
    xx = np.arange(size, dtype=np.float32)[None, :] - np.float32(centre[1])
    dist = np.sqrt(yy * yy + xx * xx) - np.float32(well_r)  # signed distance to the rim
    outside = 1 / (1 + np.exp(np.clip(-dist / (0.4 * rim_w), -50, 50)))  # smooth, at full size
    bg = bg * (1 - outside) + np.float32(rng.uniform(0.25, 0.45)) * outside  # plastic beyond
    # the rim: a dark band, with a thin bright refraction line just inside it
    bg = bg * (1 - rng.uniform(0.45, 0.7) * np.exp(-0.5 * (dist / rim_w) ** 2))
    bg = bg + 0.08 * np.exp(-0.5 * ((dist + 2.5 * rim_w) / (0.6 * rim_w)) ** 2)
    blotch = _smooth(rng.standard_normal(shape, dtype=np.float32), 150 * s, f=16)
    bg = bg * (1 + (0.07 if hard else 0.03) * blotch / (blotch.std() + 1e-9))

    # ---- the spheroid: ellipse + low-frequency perturbation + surface bumps
    frac = rng.uniform(0.10, 0.45)  # diameter as a fraction of the well diameter
    r = frac * well_r
    elong = rng.uniform(1.0, 1.6 if hard else 1.25)
    ang = rng.uniform(0, np.pi)
    outline = _harmonics(rng, 0.12 if hard else 0.06, np.array([2, 3, 4]))
    bumps = _harmonics(rng, 0.025, np.array([13, 19, 27, 37]))
    shape_fn = lambda t: np.clip(outline(t) * bumps(t), 0.5, 1.6)  # noqa: E731  (bounded: always fits)
    t = np.linspace(-np.pi, np.pi, 720, endpoint=False)
    outer = r * shape_fn(t)
    pts = np.stack([outer * np.sin(t), outer * np.cos(t)], 1)
    # rotate the ellipse frame's outline into the image frame
    c, sn = np.cos(ang), np.sin(ang)
    u_, v_ = pts[:, 1], pts[:, 0] / elong
    pts = np.stack([u_ * sn + v_ * c, u_ * c - v_ * sn], 1)
    cy, cx = _place(rng, pts, centre, well_r, size, 3 * s, hard and rng.random() < 0.5)
    sl, dy, dx = _window(shape, cy, cx, np.abs(pts).max() + 40 * s)
    inside, rho = _star(dy, dx, r, elong, ang, shape_fn)
    mask = np.zeros(shape, bool)
    mask[sl] = inside

    # optical density of the spheroid: thick dark core, granular, bumpy rim
    core = np.clip(1 - rho * rho, 0, 1)
    grain = _band(rng, inside.shape, rng.uniform(2.0, 3.5) * s)
    fine = ndi.gaussian_filter(rng.standard_normal(inside.shape).astype(np.float32), 0.8 * s)
    dens = rng.uniform(1.0, 1.8) * core**0.6 + rng.uniform(0.6, 1.4) * core**3  # necrotic core
    dens = dens * (1 + 0.18 * grain + 0.08 * fine / (fine.std() + 1e-6))
    if hard:
        dens = dens * rng.uniform(0.15, 0.45)  # barely darker than the background
    od = np.zeros(shape, np.float32)
    od[sl] = np.where(inside, np.clip(dens, 0.05, None) + 0.25, 0)  # + the dark rim
    edge = float(rng.uniform(0.8, 1.6) * s)

    # ---- hard: debris and small cell clusters near the spheroid (not in the mask)
    extra = np.zeros(shape, np.float32)
    for _ in range(rng.poisson(25) if hard else rng.poisson(3)):
        near = hard and rng.random() < 0.7
        if near:
            th, dd = rng.uniform(0, 2 * np.pi), r * rng.uniform(1.0, 2.2)
            oy, ox = cy + dd * np.sin(th), cx + dd * np.cos(th)
        else:
            oy, ox = rng.uniform(0, size, 2)
        rr = rng.uniform(3, 16 if near else 6) * s
        win = _window(shape, oy, ox, 2 * rr)
        if win is None:
            continue
        wsl, wdy, wdx = win
        blob, brho = _star(
            wdy,
            wdx,
            rr,
            rng.uniform(1, 1.8),
            rng.uniform(0, 3.1),
            _harmonics(rng, 0.2, np.array([2, 3, 5])),
        )
        blob &= ~mask[wsl]  # debris may touch the spheroid but is never part of it
        extra[wsl] += np.where(blob, rng.uniform(0.3, 1.0) * (1.2 - brho), 0).astype(np.float32)

    # ---- image formation: transmitted light through the optical density
    od_b = ndi.gaussian_filter(od + extra, edge)
    halo = ndi.gaussian_filter(od_b, 6 * s) - od_b  # slight defocus: bright just outside
    img = bg * (np.exp(-od_b) + 0.25 * np.clip(halo, 0, None))
    # out-of-focus dust on the optics: soft dark discs
    for _ in range(rng.poisson(6)):
        oy, ox, sd = *rng.uniform(0, size, 2), rng.uniform(8, 30) * s
        win = _window(shape, oy, ox, 3 * sd)
        if win is not None:
            wsl, wdy, wdx = win
            img[wsl] *= 1 - rng.uniform(0.03, 0.1) * np.exp(-(wdy**2 + wdx**2) / (2 * sd * sd))
    if hard:
        img = ndi.gaussian_filter(img, rng.uniform(1.5, 4.0) * s)  # out of focus
    img = img * np.float32(1 + rng.normal(0, 0.004, (size, 1)))  # camera row pattern
    img = img + rng.standard_normal(shape, dtype=np.float32) * np.sqrt(
        0.0006 * np.clip(img, 0, None) + 4e-5
    )
    # exposure: easy images use the range, hard ones sit in a narrow band
    lo, hi = (rng.uniform(60, 100), rng.uniform(130, 170)) if hard else (10, rng.uniform(200, 240))
    out = lo + (hi - lo) * img / max(float(np.percentile(img, 99.5)), 1e-6)
    out = out + rng.standard_normal(shape, dtype=np.float32) * 1.2  # 8-bit camera read noise
    well = {"centre": (float(centre[0]), float(centre[1])), "radius": float(well_r)}
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask, well
