"""Synthetic co-cultures pasted from real mono-culture images (DeepMuCS-Generation).

As Khalid et al. (DeepMuCS) do, for any number (≥ 2) of *sources*, one cell type each::

    fields ─► cells: crop, exact mask, halo ring ─────────────────────┐
      └─────► background: cells (and unmarked cells) filled in, given ─┴─► paste: angle, flip,
              the field's own noise; debris from the fields re-added       size, overlap limit

A cell is kept as the *ratio* of its pixels to the local background of its own field
(transmitted light: illumination × transmission), so it lands at the level of the new
background; its halo fades out over ``feather`` px and its contrast and noise are brought
towards the new field's, so no seam shows. Masks stay exact: an instance is exactly where
its cell was pasted opaque, minus what later cells cover.

>>> a = source_from_folder(folder, name="GMP", prefix="210930MA20", pixel_size=0.62)
>>> b = source_from_folder(folder, name="MkP", prefix="181024TK20", pixel_size=0.62)
>>> cc = generate_coculture(build_library([a, b]), seed=0)  # cc.image, cc.labels, cc.types

The sources (fields and masks of each cell type) and the library of cut-out cells and
backgrounds are built in :mod:`.coculture_sources`; this module pastes and writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .coculture_sources import Library, Source, _largest, _Patch, build_library, split_sources


@dataclass(frozen=True, eq=False)
class CoCulture:
    """One generated image: pixels, instance labels and the cell type of every instance."""

    image: np.ndarray  # the sources' dtype
    labels: np.ndarray  # uint16 (uint32 past 65535 cells), 0 = background
    types: dict[int, str]  # instance id -> cell type, for every id in labels
    type_names: tuple[str, ...]
    fields: frozenset[str]  # every source field used ("type:field"), the background's too

    def type_labels(self) -> dict[str, np.ndarray]:
        """One instance image per cell type, numbered 1..n (the project's mask layout)."""
        out = {}
        for t in self.type_names:
            lut = np.zeros(int(self.labels.max()) + 1, self.labels.dtype)
            ids = [i for i, k in self.types.items() if k == t]
            lut[ids] = np.arange(1, len(ids) + 1)
            out[t] = lut[self.labels]
        return out

    def class_mask(self) -> np.ndarray:
        """uint8 class image: 0 background, k = 1 + index of the type in ``type_names``."""
        lut = np.zeros(int(self.labels.max()) + 1, np.uint8)
        for i, t in self.types.items():
            lut[i] = 1 + self.type_names.index(t)
        return lut[self.labels]


def _transform(p: _Patch, angle: float, flip: bool, scale: float, gain: float, sigma: float):
    """Contrast ``gain``, smoothing, flip, rotation and scale of a patch; its mask is the
    largest component of the moved mask, and opaque."""
    r, a, m = 1 + gain * (p.ratio - 1), p.alpha, p.mask.astype(np.float32)
    if sigma > 0.3:  # a noisier source than the target: smooth its pixel noise away
        r = 1 + ndi.gaussian_filter(r - 1, sigma)
    if flip:
        r, a, m = r[:, ::-1], a[:, ::-1], m[:, ::-1]
    if angle % 90 == 0 and scale == 1:  # right angles: exact
        r, a, m = (np.rot90(x, int(angle // 90)) for x in (r, a, m))
    else:
        c, s = np.cos(np.deg2rad(angle)) / scale, np.sin(np.deg2rad(angle)) / scale
        mat, side = np.array([[c, -s], [s, c]]), int(np.ceil(np.hypot(*r.shape) * scale)) + 2
        off = (np.array(r.shape) - 1) / 2 - mat @ np.full(2, (side - 1) / 2)
        r, a, m = (ndi.affine_transform(x, mat, off, output_shape=(side, side), order=1, cval=v)
                   for x, v in ((r, 1.0), (a, 0.0), (m, 0.0)))  # fmt: skip
    m = _largest(m > 0.5)
    return r, np.where(m, 1, a), m


def generate_coculture(
    library: Library, *, seed: int, shape: tuple[int, int] | None = None,
    counts: int | Mapping[str, int] | None = None, density: float = 1.0,
    max_overlap: float = 0.1, rotate: str = "any", flip: bool = True,
    scale: tuple[float, float] = (0.85, 1.15), debris: float = 0.5, match_contrast: float = 0.5,
    tries: int = 50,
) -> CoCulture:  # fmt: skip
    """Paste cells of every type of ``library`` onto one of its backgrounds.

    Parameters
    ----------
    seed
        Everything random derives from it: equal seeds give equal images.
    shape
        Output size, cropped from the background; default the whole background.
    counts
        Cells per type (one int for all, or per type); default Poisson with the median
        density of that type's fields × ``density`` / number of types, at least 1.
    max_overlap
        Largest fraction of a new cell that may lie on placed cells, and of a placed cell
        that later cells may cover in all; a placement splitting a placed cell in two is
        refused. The new cell lies on top: the covered pixels leave the earlier mask.
    rotate
        ``"any"`` (arbitrary angle), ``"right"`` (90° steps, pixel-exact) or ``"none"``.
    scale
        Random size factor range, clipped to the type's measured size range.
    debris
        Noise artefacts added, relative to the debris density of the source fields.
    match_contrast
        0 keeps each cell's contrast relative to its own background; 1 scales it by
        (halo contrast of the background's field / of its own field), as if imaged
        with the background's optics (halo contrast is partly the cell type's own).
    """
    if rotate not in ("any", "right", "none"):
        raise ValueError(f"rotate must be 'any', 'right' or 'none', not {rotate!r}")
    if not 0 <= max_overlap <= 1:
        raise ValueError(f"max_overlap is a fraction in [0, 1], got {max_overlap}")
    rng = np.random.default_rng(seed)
    bg = library.backgrounds[rng.integers(len(library.backgrounds))]
    k, fl = int(rng.integers(4)), bool(rng.integers(2))
    smooth, noise = (np.rot90(a[:, ::-1] if fl else a, k) for a in (bg.smooth, bg.noise))
    h, w = shape or smooth.shape
    if h > smooth.shape[0] or w > smooth.shape[1]:
        raise ValueError(f"shape {shape} exceeds the background ({smooth.shape}); ask less")
    y0, x0 = int(rng.integers(smooth.shape[0] - h + 1)), int(rng.integers(smooth.shape[1] - w + 1))
    smooth, noise = (np.ascontiguousarray(a[y0 : y0 + h, x0 : x0 + w]) for a in (smooth, noise))
    out, labels = smooth + noise, np.zeros((h, w), np.int64)
    used, types, area0, boxes = {bg.field}, {}, {}, {}

    def angle():
        return {"any": rng.uniform(0, 360), "right": 90.0 * rng.integers(4), "none": 0.0}[rotate]

    def moved(p, size):  # contrast gain, noise matched to the background, random pose
        (n, con), (ref, ref_con), g = p.stats, bg.stats, 1.0
        if match_contrast and con > 0 and ref_con > 0:  # (nan > 0 is False)
            g = float(np.clip((ref_con / con) ** match_contrast, 0.25, 4.0))
        n *= g  # smoothing white noise with σ divides it by 2σ√π
        sig = min(2.0, n / ref / (2 * np.sqrt(np.pi))) if n > ref else 0.0
        keep = np.sqrt(max(0.0, 1 - (min(n, ref) / ref) ** 2))  # share of the target's noise
        return *_transform(p, angle(), flip and bool(rng.integers(2)), size, g, sig), keep

    def paste(p, r, a, m, keep, y, x, new_id):
        ys, xs = slice(max(y, 0), min(y + r.shape[0], h)), slice(max(x, 0), min(x + r.shape[1], w))
        ps = (slice(ys.start - y, ys.stop - y), slice(xs.start - x, xs.stop - x))
        lab, mm, aa = labels[ys, xs], m[ps], a[ps].copy()
        if new_id:
            aa[(lab > 0) & ~mm] = 0  # a halo does not paint over a placed cell
            lab[mm] = new_id
        out[ys, xs] += aa * (smooth[ys, xs] * r[ps] + keep * noise[ys, xs] - out[ys, xs])
        used.add(p.field)

    n_debris = rng.poisson(debris * library.debris_density * h * w / 1e6) if library.debris else 0
    for _ in range(n_debris):
        p = library.debris[rng.integers(len(library.debris))]
        paste(p, *moved(p, 1.0), int(rng.integers(-2, h - 2)), int(rng.integers(-2, w - 2)), 0)
    if isinstance(counts, Mapping):
        want = {t: int(counts.get(t, 0)) for t in library.types}
    else:
        per_type = h * w / 1e6 * density / len(library.types)
        lam = {t: library.density[t] * per_type for t in library.types}
        want = {t: counts if counts is not None else max(1, rng.poisson(lam[t])) for t in lam}
    for t in rng.permutation([k for k in library.types for _ in range(want[k])]):
        p = library.cells[t][rng.integers(len(library.cells[t]))]
        area = float(np.clip(p.mask.sum() * rng.uniform(*scale) ** 2, *library.areas[t]))
        r, a, m, keep = moved(p, float(np.sqrt(area / p.mask.sum())))
        my, mx = np.nonzero(m)
        if not my.size or my.max() - my.min() >= h or mx.max() - mx.min() >= w:
            continue
        mm = m[my.min() : my.max() + 1, mx.min() : mx.max() + 1]
        for _ in range(tries):  # the whole mask inside the image
            y = int(rng.integers(-my.min(), h - my.max()))
            x = int(rng.integers(-mx.min(), w - mx.max()))
            box = (slice(y + my.min(), y + my.max() + 1), slice(x + mx.min(), x + mx.max() + 1))
            if _allowed(labels, mm, box, area0, boxes, max_overlap):
                new_id = len(types) + 1
                paste(p, r, a, m, keep, y, x, new_id)
                types[new_id], area0[new_id], boxes[new_id] = t, int(mm.sum()), box
                break
    present = np.unique(labels[labels > 0])  # number the cells left visible 1..n
    lut = np.zeros(int(labels.max()) + 1, np.int64)
    lut[present] = np.arange(1, len(present) + 1)
    if np.issubdtype(library.dtype, np.integer):
        out = np.clip(np.rint(out), np.iinfo(library.dtype).min, np.iinfo(library.dtype).max)
    kinds = {int(lut[i]): types[int(i)] for i in present}
    labels = lut[labels].astype(np.uint16 if len(present) < 65536 else np.uint32)
    return CoCulture(out.astype(library.dtype), labels, kinds, library.types, frozenset(used))


def _allowed(labels, mm, box, area0, boxes, max_overlap) -> bool:
    """Whether a mask ``mm`` at ``box`` covers at most ``max_overlap`` of itself with placed
    cells, leaves each placed cell at least 1 - ``max_overlap`` of its area, splits none."""
    hit = labels[box][mm]
    hit = hit[hit > 0]
    if hit.size > max_overlap * mm.sum():
        return False
    for old in np.unique(hit):
        ob = boxes[old]
        ys = slice(min(ob[0].start, box[0].start), max(ob[0].stop, box[0].stop))
        xs = slice(min(ob[1].start, box[1].start), max(ob[1].stop, box[1].stop))
        cover = np.zeros((ys.stop - ys.start, xs.stop - xs.start), bool)
        cover[box[0].start - ys.start : box[0].stop - ys.start,
              box[1].start - xs.start : box[1].stop - xs.start] = mm  # fmt: skip
        rest = (labels[ys, xs] == old) & ~cover
        if area0[old] - rest.sum() > max_overlap * area0[old] or ndi.label(rest)[1] > 1:
            return False
    return True


_JOB: dict = {}
"""What the image writers of :func:`write_dataset` share (forked workers inherit it)."""


def _write_image(job: tuple[str, int, int]) -> set:
    from ..batch_outputs import write_tif

    split, i, seed = job
    cc = generate_coculture(_JOB["lib"], seed=seed, **_JOB["options"])
    stem = f"{split}{i:05d}"
    write_tif(_JOB["folder"] / split / f"{stem}_image.tif", cc.image)
    for t, lab in cc.type_labels().items():
        write_tif(_JOB["folder"] / split / f"{stem}_{t}.tif", lab)
    return cc.fields


def write_dataset(
    sources: Sequence[Source], folder, *, n_train: int, n_test: int, seed: int = 0,
    test_fraction: float = 0.25, pixel_size: float | None = None, halo: int | None = None,
    workers: int = 1, **options,
) -> dict:  # fmt: skip
    """Write co-cultures to ``folder/train``, ``folder/test`` and ``folder/manifest.json``.

    Each image is ``<id>_image.tif`` with one instance mask ``<id>_<type>.tif`` per cell
    type, ``<id>`` ``train00000``, … and ``test00000``, … (one recipe may name both folders:
    no image id is in both). Test images are made only from test fields (see
    :func:`split_sources`), so no position a test image shows is seen in training.
    ``options`` go to :func:`generate_coculture`. Deterministic for ``seed``, whatever
    ``workers`` (processes that generate images side by side, forked where the system
    forks safely: Linux; elsewhere one). Returns the manifest.
    """
    import json
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    from ..atomic import write_atomic

    if sys.platform != "linux":
        workers = 1

    folder = Path(folder)
    parts = split_sources(sources, test_fraction=test_fraction, seed=seed)
    seeds = np.random.SeedSequence(seed).generate_state(n_train + n_test)
    manifest = {"seed": seed, "types": [s.name for s in sources]}
    for split, part, part_seeds in zip(
        ("train", "test"), parts, (seeds[:n_train], seeds[n_train:]), strict=True
    ):
        lib = build_library(part, pixel_size=pixel_size, halo=halo, seed=seed)
        (folder / split).mkdir(parents=True, exist_ok=True)
        used = set()
        _JOB.update(lib=lib, folder=folder, options=options)
        jobs = [(split, i, int(s)) for i, s in enumerate(part_seeds)]
        try:
            if workers > 1:
                fork = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(workers, mp_context=fork) as pool:
                    for fields in pool.map(_write_image, jobs):
                        used |= fields
            else:
                for job in jobs:
                    used |= _write_image(job)
        finally:
            _JOB.clear()
        manifest[split] = {"images": len(part_seeds), "pixel_size": lib.pixel_size,
                           "fields": sorted(used)}  # fmt: skip
    text = json.dumps(manifest, indent=1)
    write_atomic(folder / "manifest.json", lambda tmp: tmp.write_text(text))
    return manifest
