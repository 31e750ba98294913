"""Seeded synthetic cancer-cell cultures on vascular structures (Rahkonen et al.'s six classes).

Rahkonen et al. (2020) images PC3 / LNCaP cells on decellularised vascular networks with a
Cell-IQ phase-contrast microscope (8-bit RGB, 1392×1040, six overlapping
classes); no public images with such masks exist, so the six-class model starts
from this generator. Structures are drawn analytically (star-shaped blobs,
tapered spindles, tubes around branching random walks), so each mask is
*exactly* where its structure is, and the image is rendered only from what was
drawn. Vessels ``P`` run under cells ``S`` and ``I`` (overlaps kept), ``I`` may
lie over ``S``, cell matter ``R`` is a patchy ring touching a spheroid ``O`` and
may cover vessels, spikes ``IP`` root in the spheroid and may cross ``R``. A
spheroid is opaque in phase contrast, so nothing under it (``P``, ``R``,
``IP``) is marked there, as an annotator could not see it.

Rendering: an optical thickness map becomes dark objects with bright halos (a
difference of Gaussians), under uneven illumination, with debris, shot and read
noise, a slight blur and, in RGB, a slight colour cast.

The drawing primitives it shares with :mod:`.spheroid` (windows, star-shaped blobs,
spindles, coarse-grid blurs) are in :mod:`.shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .shapes import _harmonics, _polar, _smooth, _spindle, _star, _upsample, _window

CLASSES: list[tuple[str, str, str]] = [
    ("S", "#ff2020", "non-invasively growing single cells"),
    ("I", "#ffffff", "invasive cells: elongated, often along vessels"),
    # Black in Rahkonen et al. 2020; black labels vanish on napari's dark canvas, so a light gray.
    ("IP", "#a0a0a0", "invasive spikes growing from spheroid edges (black in Rahkonen 2020)"),
    ("P", "#2050ff", "vascular structures"),
    ("O", "#80d0ff", "spheroids (LNCaP)"),
    ("R", "#ffe020", "cell matter around spheroids"),
]
CLASS_NAMES: tuple[str, ...] = tuple(c[0] for c in CLASSES)
_REF_AREA = 1040 * 1392  # object counts are per Cell-IQ frame; sizes are in pixels
_FAR = 1e6  # rho where there is no vessel at all (finite: cos() of it must not warn)


def class_specs():
    """The six classes as :class:`~napari_cultureseg.core.bundle_config.ClassSpec` (for bundles)."""
    from ..bundle_config import ClassSpec

    return tuple(ClassSpec(n, colour=c, description=d) for n, c, d in CLASSES)


@dataclass
class _Scene:
    """What was drawn: exact masks and the optical thickness the renderer sees."""

    shape: tuple[int, int]
    masks: dict[str, np.ndarray]
    phi: np.ndarray  # optical thickness of the six classes' structures, 0 elsewhere
    glow: np.ndarray  # bright (rounded, out-of-phase) parts: adds light
    debris: np.ndarray  # thickness of debris, which belongs to no class
    vessel_rho: np.ndarray  # distance to the vessel axis / local radius (P is rho <= 1)
    objects: list = field(default_factory=list)  # (class, slices, inside) of every stamp


# --------------------------------------------------------------- vessels


def _vessel_paths(shape, rng, n_roots):
    """Branching persistent random walks: a list of (N, 4) arrays of y, x, radius, angle."""
    h, w = shape
    u, margin, step, paths = rng.uniform, 60, 4.0, []
    # (y, x, heading, radius, length, depth) of walks still to run
    stack = [(u(0, h), u(0, w), u(0, 6.3), u(5, 13), u(400, 1100), 0) for _ in range(n_roots)]
    while stack and len(paths) < 120:
        y, x, a, r, length, depth = stack.pop()
        turn, pts, phase, per = 0.0, [], rng.uniform(0, 6.3), rng.uniform(25, 80)
        for i in range(int(length / step)):
            turn = 0.9 * turn + rng.normal(0, 0.022)  # persistent curvature: tubes meander
            a += turn
            y, x = y + step * np.sin(a), x + step * np.cos(a)
            # tubes swell and narrow along their length, with occasional nodes
            pts.append((y, x, r * (1 + 0.22 * np.sin(i * step / per + phase)), a))
            if not (-margin < y < h + margin and -margin < x < w + margin):
                break
            if depth < 4 and rng.random() < 0.014:
                turn_to = a + rng.choice((-1, 1)) * u(0.5, 1.3)
                stack.append((y, x, turn_to, r * u(0.5, 0.85), length * u(0.3, 0.8), depth + 1))
        if len(pts) > 1:
            paths.append(np.array(pts, np.float32))
    return paths


def _vessels(shape, rng, n_roots, f=2):
    """Tube field rho (distance to the axis / local radius) and the axis points.

    The distance transform runs on a grid ``f`` times coarser and rho is
    interpolated back; the mask is *defined* as ``rho <= 1`` at full size, so it
    stays exact while the transform costs a quarter.
    """
    h, w = shape
    paths = _vessel_paths(shape, rng, n_roots)
    if not paths:
        return np.full(shape, _FAR, np.float32), np.zeros((0, 4), np.float32)
    dense = []
    for p in paths:  # densify to < 1 coarse pixel spacing so the axis is unbroken
        s = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(p[:, :2], axis=0).T))])
        t = np.arange(0, s[-1], f * 0.7)
        dense.append(np.stack([np.interp(t, s, p[:, k]) for k in range(4)], 1))
    pts = np.concatenate(dense).astype(np.float32)
    hc, wc = -(-h // f), -(-w // f)
    iy, ix = np.round(pts[:, 0] / f).astype(int), np.round(pts[:, 1] / f).astype(int)
    ok = (iy >= 0) & (iy < hc) & (ix >= 0) & (ix < wc)
    owner = np.full((hc, wc), -1, np.int64)
    owner[iy[ok], ix[ok]] = np.flatnonzero(ok)
    if not ok.any():
        return np.full(shape, _FAR, np.float32), pts[ok]
    dist, (ny, nx) = ndi.distance_transform_edt(owner < 0, return_indices=True)
    rho = (dist * f / pts[owner[ny, nx], 2]).astype(np.float32)
    return _upsample(rho, f, shape), pts[ok]


# --------------------------------------------------------------- drawing


def _draw(shape, rng, density=1.0) -> _Scene:
    """Draw one culture: exact class masks and the optical thickness they make."""
    (h, w), u = shape, rng.uniform
    area = h * w / _REF_AREA
    masks = {n: np.zeros(shape, bool) for n in CLASS_NAMES}
    phi = np.zeros(shape, np.float32)
    glow = np.zeros(shape, np.float32)
    objects = []
    # one granular texture for every object: cheaper than one per object and looks the same
    grain = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.2)
    grain /= grain.std() + 1e-6
    lumps = _smooth(rng.standard_normal(shape, dtype=np.float32), 6, f=2)
    lumps /= lumps.std() + 1e-6

    def put(name, sl, inside, thickness):
        masks[name][sl] |= inside
        phi[sl] += np.where(inside, thickness, 0).astype(np.float32)
        objects.append((name, sl, inside))

    # P: vascular network. Cut out under spheroids afterwards (opaque there).
    rho, axis_pts = _vessels(shape, rng, max(1, rng.poisson(5.5 * area)))
    rho *= 1 + 0.08 * lumps  # ragged walls; the mask is still exactly rho <= 1
    tube = rho <= 1
    wall = np.sqrt(np.clip(1 - rho * rho, 0, 1))

    # O, R, IP: spheroids with a ring of cell matter and radial spikes
    r_cap = 0.32 * min(h, w)
    n_o = rng.poisson(1.7 * area)
    if n_o == 0 and rng.random() < 0.8:
        n_o = 1
    centres = []
    for _ in range(n_o * 6):
        if len(centres) == n_o:
            break
        r = min(rng.uniform(45, 135), r_cap)
        cy, cx = rng.uniform(-0.2 * r, h + 0.2 * r), rng.uniform(-0.2 * r, w + 0.2 * r)
        if any(np.hypot(cy - y, cx - x) < 1.25 * (r + q) + 30 for y, x, q in centres):
            continue
        centres.append((cy, cx, r))
        elong, ang = rng.uniform(1.0, 1.35), rng.uniform(0, np.pi)
        outline = _harmonics(rng, 0.07, (2, 3, 4))
        bumps = _harmonics(rng, 0.03, (11, 17, 23, 29))  # cells bulging at the surface
        shape_fn = lambda t, o=outline, b=bumps: o(t) * b(t)  # noqa: E731
        ring = rng.uniform(0.12, 0.45) * r if rng.random() < 0.85 else 0.0
        ring_fn = _harmonics(rng, 0.7, (1, 2, 3, 4, 6, 9, 14))
        win = _window(shape, cy, cx, r * 1.8 * (1 + 0.5 * (ring > 0)) + 90)
        if win is None:
            continue
        sl, dy, dx = win
        body, rho_o = _star(dy, dx, r, elong, ang, shape_fn)
        core = np.clip(1 - rho_o**2, 0, 1)
        # packed cells: a band-pass texture at the scale of a cell (~12 px)
        noise = rng.standard_normal(body.shape).astype(np.float32)
        cells = ndi.gaussian_filter(noise, 2.5) - ndi.gaussian_filter(noise, 5.0)
        cells /= cells.std() + 1e-6
        # dark, lumpy, darkest towards the core; thickness saturates in the renderer
        o_thick = 1.6 + 1.6 * core + 0.3 * cells + 0.25 * lumps[sl] + 0.25 * grain[sl]
        put("O", sl, body, np.clip(o_thick, 0.2, None))
        if ring > 0:
            d, t = _polar(dy, dx, elong, ang)
            extra = np.clip(ring * ring_fn(t), 0, 2.2 * ring)  # patchy: gaps where <= 0
            outer = d <= r * shape_fn(t) + extra * (1 + 0.3 * lumps[sl])  # frayed edge
            g = grain[sl]  # loose cells and their granules
            cells_r = np.clip(0.5 + 0.35 * cells + 0.1 * g + 0.6 * (g > 1.8), 0.12, None)
            put("R", sl, outer & ~body, cells_r)
        for _ in range(rng.poisson(7)):
            theta = rng.uniform(0, 2 * np.pi)
            # root the spike just inside the outline so it grows out of the body seamlessly
            ray = np.arange(0, 2 * r, 1.0, dtype=np.float32)
            on_ray = _star(ray * np.sin(theta), ray * np.cos(theta), r, elong, ang, shape_fn)[0]
            edge = ray[on_ray][-1] - 3
            sy, sx = cy + edge * np.sin(theta), cx + edge * np.cos(theta)
            length, width = rng.uniform(25, 90), rng.uniform(2.5, 5.5)
            sw = _window(shape, sy, sx, length + 10)
            if sw is None:
                continue
            ssl, sdy, sdx = sw
            tilt, bend, wave = theta + rng.normal(0, 0.3), rng.normal(0, 0.004), (u(0, 1.5), 9, 0)
            spike, prof = _spindle(sdy, sdx, length, width, tilt, bend, wave, one_sided=True)
            body_here = masks["O"][ssl]
            put("IP", ssl, spike & ~body_here, 0.35 + 0.5 * prof)
            phi[ssl] += np.where(spike & body_here, 0.3, 0).astype(np.float32)
    opaque = masks["O"]  # nothing shows through a spheroid (a later one may cover R or IP)
    masks["P"] = tube & ~opaque
    masks["R"] &= ~opaque
    masks["IP"] &= ~opaque
    # matrix tube: thicker walls, longitudinal fibres (lines at fixed rho run along the axis)
    fibres = 0.1 * np.cos(3 * np.pi * rho + 1.5 * lumps) + 0.08 * lumps + 0.06 * grain
    p_thick = np.clip(0.3 + 0.3 * wall + fibres, 0.05, None)  # > 0: every P pixel is drawn
    phi += np.where(masks["P"], p_thick, 0).astype(np.float32)
    blocked = ndi.binary_dilation(masks["O"] | masks["R"], iterations=4)

    def free(sl, inside, limit=0.0):
        return inside.any() and (blocked[sl] & inside).mean() <= limit

    # S: roundish single cells, ~35 % sitting on vessels
    s_centres = []
    for _ in range(rng.poisson(75 * area * density)):
        r = rng.uniform(10.0, 19.0)
        if len(axis_pts) and rng.random() < 0.35:
            p = axis_pts[rng.integers(len(axis_pts))]
            cy, cx = p[0] + rng.normal(0, 0.5 * p[2]), p[1] + rng.normal(0, 0.5 * p[2])
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        win = _window(shape, cy, cx, 1.6 * r)
        if win is None:
            continue
        sl, dy, dx = win
        elong, ang, outline = u(1.0, 1.6), u(0, np.pi), _harmonics(rng, 0.13, (2, 3, 4, 5))
        inside, rho_s = _star(dy, dx, r, elong, ang, outline)
        if not free(sl, inside) or (masks["S"][sl] & inside).sum() > 0.25 * inside.sum():
            continue
        dome = np.sqrt(np.clip(1 - rho_s**2, 0, 1))
        g = grain[sl]
        # a flatter, smoother nucleus off-centre, and dark vesicles where the grain peaks
        nucleus = _star(dy - u(-0.2, 0.2) * r, dx - u(-0.2, 0.2) * r, 0.4 * r, 1.2, ang, outline)[0]
        cyto = 0.8 + 0.7 * dome + 0.2 * np.clip(g, -1.5, None) + 0.8 * (g > 1.9)
        put("S", sl, inside, np.where(nucleus, 0.8 + 0.4 * dome + 0.5 * (g > 1.8), cyto))
        if rng.random() < 0.3:  # rounded (mitotic-like) cells turn bright in phase contrast
            glow[sl] += np.where(inside, 0.5 * dome, 0).astype(np.float32)
        s_centres.append((cy, cx))

    # I: elongated invasive cells, mostly along vessels, sometimes over S cells
    for _ in range(rng.poisson(20 * area * density)):
        pick = rng.random()
        if len(axis_pts) and pick < 0.55:
            p = axis_pts[rng.integers(len(axis_pts))]
            cy, cx, ang = p[0], p[1], p[3] + rng.normal(0, 0.15)
        elif s_centres and pick < 0.7:
            cy, cx = s_centres[rng.integers(len(s_centres))]
            ang = rng.uniform(0, np.pi)
        else:
            cy, cx, ang = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi)
        length, width = rng.uniform(35, 110), rng.uniform(3.0, 6.5)
        win = _window(shape, cy, cx, length / 2 + 12)
        if win is None:
            continue
        sl, dy, dx = win
        wave = (rng.uniform(0, 3), rng.uniform(6, 14), rng.uniform(0, 6.3))
        inside, prof = _spindle(dy, dx, length, width, ang, rng.normal(0, 0.003), wave)
        if not free(sl, inside):
            continue
        g = grain[sl]
        put("I", sl, inside, 0.35 + 0.5 * prof + 0.15 * np.clip(g, -1.5, None) + 0.6 * (g > 2.0))

    # debris: specks and clumps that belong to no class
    debris = np.zeros(shape, np.float32)
    for _ in range(rng.poisson(140 * area)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.gamma(2.0, 0.9) + 0.6
        win = _window(shape, cy, cx, 2 * r)
        if win is not None:
            sl, dy, dx = win
            outline = _harmonics(rng, 0.15, (2, 3))
            inside, _ = _star(dy, dx, r, u(1, 2), u(0, 3.1), outline)
            debris[sl] += np.where(inside, rng.uniform(0.4, 1.6), 0).astype(np.float32)
    return _Scene(shape, masks, phi, glow, debris, rho, objects)


# --------------------------------------------------------------- rendering


def _render(scene: _Scene, rng, rgb: bool) -> np.ndarray:
    """Phase-contrast look from the drawn thickness: dark bodies, bright halos, noise.

    A phase-contrast image is roughly ``1 - k·(φ - G_σ*φ)``: where the object
    is thicker than its surroundings it is dark, just outside its edge (where
    the blurred object spills over) it is bright: the halo, a difference of
    Gaussians of the object map. Thick objects also scatter light away, an
    absorption-like ``exp(-a·φ)`` term that keeps spheroids dark inside.
    """
    h, w = scene.shape
    phi = scene.phi + scene.debris
    # faint fibrous matrix under everything (decellularised ECM)
    fib = ndi.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 1.5)
    phi = phi + 0.05 * np.abs(fib) / (fib.std() + 1e-6)
    body = ndi.gaussian_filter(phi, 0.8)
    near = ndi.gaussian_filter(phi, 2.5)
    far = _smooth(phi, 9.0)
    dog = body - (0.65 * near + 0.35 * far)
    # saturating: a spheroid's halo is bright but does not blow out to white
    contrast = 0.55 * np.tanh(dog / 0.55)
    bright = ndi.gaussian_filter(scene.glow, 1.5)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    g = rng.normal(0, 0.06, 2)
    illum = 1 + g[0] * yy + g[1] * xx - rng.uniform(0.05, 0.15) * (yy**2 + xx**2) / 2
    blotch = _smooth(rng.standard_normal((h, w), dtype=np.float32), 120, f=16)
    illum = illum + 0.04 * blotch / (blotch.std() + 1e-9)
    bg = rng.uniform(0.55, 0.66)
    img = bg * illum * (np.exp(-0.33 * body) - 0.9 * contrast + 0.45 * bright)
    channels = []
    cast = np.array([1.02, 1.0, 0.94]) * (1 + rng.normal(0, 0.02, 3)) if rgb else np.ones(1)
    for gain in cast:
        c = img * np.float32(gain)
        # shot noise grows with the signal, read noise does not
        sd = np.sqrt(0.0008 * np.clip(c, 0, None) + 1e-4)
        c = c + rng.standard_normal((h, w), dtype=np.float32) * sd
        channels.append(ndi.gaussian_filter(c, 0.5))  # optics + demosaicking blur
    out = np.stack(channels, -1) if rgb else channels[0]
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def culture(
    shape: tuple[int, int] = (1040, 1392),
    *,
    seed: int = 0,
    rgb: bool = True,
    density: float = 1.0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A synthetic Cell-IQ phase-contrast culture on vascular structures, with exact masks.

    Parameters
    ----------
    shape
        Image size (H, W); Rahkonen et al.'s frames are 1040×1392. Object sizes are in
        pixels (the magnification stays), object counts scale with the area.
    seed
        Random seed; the output is a pure function of the arguments, and the
        drawing does not depend on ``rgb`` (the same seed gives the same masks).
    rgb
        8-bit RGB with a slight colour cast, as Cell-IQ saves; else gray.
    density
        Multiplies the number of single (``S``) and invasive (``I``) cells.

    Returns
    -------
    image : numpy.ndarray
        ``(H, W, 3)`` or ``(H, W)`` uint8.
    masks : dict[str, numpy.ndarray]
        ``(H, W)`` bool for each of :data:`CLASS_NAMES`; classes overlap.

    Examples
    --------
    >>> image, masks = culture((256, 256), seed=1)
    >>> image.shape, sorted(masks) == sorted(CLASS_NAMES)
    ((256, 256, 3), True)
    """
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape must be (H, W) with both at least 16, got {shape!r}")
    if density < 0:
        raise ValueError(f"density must be >= 0, got {density}")
    draw_seq, render_seq = np.random.SeedSequence(seed).spawn(2)
    scene = _draw(tuple(int(s) for s in shape), np.random.default_rng(draw_seq), density)
    return _render(scene, np.random.default_rng(render_seq), rgb), scene.masks
