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
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")  # a type name becomes part of file names


@dataclass(frozen=True, eq=False)
class Field:
    """One original mono-culture image, the instance labels of its cells, its position."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    group: str


@dataclass(frozen=True, eq=False)
class Source:
    """The fields of one cell type; ``pixel_size`` in µm per pixel (one unit for all)."""

    name: str
    fields: tuple[Field, ...]
    pixel_size: float = 1.0


def instances_from_binary(cell: np.ndarray, nucleus: np.ndarray | None = None) -> np.ndarray:
    """Split a binary cell mask into instances: a watershed on the distance to the cell
    border, seeded by the nucleus components; a cell without a nucleus stays whole."""
    from skimage.segmentation import relabel_sequential, watershed

    cell = np.asarray(cell) > 0
    lab, n = ndi.label(cell)
    if nucleus is not None and n:
        seeds, k = ndi.label((np.asarray(nucleus) > 0) & cell)
        bare = ~np.isin(lab, np.unique(lab[seeds > 0])) & cell
        seeds[bare] = lab[bare] + k
        lab = relabel_sequential(watershed(-ndi.distance_transform_edt(cell), seeds, mask=cell))[0]
    return lab.astype(np.uint16 if lab.max() < 65536 else np.uint32)


def source_from_pairs(pairs, *, name: str, pixel_size: float = 1.0, names=None) -> Source:
    """A source from ``(image, instance labels)`` pairs of one cell type; ``names`` name the
    fields (``<id>_t<n>_…``: time points of one position are kept together in a split)."""
    if not _NAME.match(name):
        raise ValueError(f"cell type name {name!r}: use letters, digits, '.', '+' or '-'")
    fields = []
    for i, (image, labels) in enumerate(pairs):
        image, labels = np.asarray(image), np.asarray(labels)
        fname = names[i] if names is not None else f"{name}{i:03d}"
        if image.ndim != 2 or image.shape != labels.shape:
            msg = f"image {image.shape} and labels {labels.shape}: give one 2-D plane, same shape"
            raise ValueError(f"{name}/{fname}: {msg}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name}/{fname}: labels must be integers (0 = background)")
        # time points of one position show the same cells: one group, one side of a split
        fields.append(Field(fname, image, labels, re.sub(r"_t\d+", "", fname)))
    if not any(f.labels.any() for f in fields):
        raise ValueError(f"source {name!r} has no cells (all masks empty); give annotated images")
    return Source(name, tuple(fields), float(pixel_size))


def source_from_folder(
    folder, *, name: str, prefix: str = "", mask_class: str = "cell",
    nucleus_class: str = "nucleus", pixel_size: float = 1.0,
) -> Source:  # fmt: skip
    """A source from ``<id>_image.*`` + ``<id>_<mask_class>.tif`` with ids starting with
    ``prefix``; binary masks are split at the nuclei of ``<id>_<nucleus_class>.tif``."""
    from ..images import read_array, read_image

    folder, pairs, names = Path(folder), [], []
    for path in sorted(folder.glob(f"{prefix}*_image.*")):
        stem = path.name.rsplit("_image.", 1)[0]
        mask, nuc = folder / f"{stem}_{mask_class}.tif", folder / f"{stem}_{nucleus_class}.tif"
        if mask.is_file():
            labels = read_array(mask)
            if labels.max() <= 1:
                labels = instances_from_binary(labels, read_array(nuc) if nuc.is_file() else None)
            pairs, names = pairs + [(read_image(path), labels)], names + [stem]
    if not pairs:
        raise ValueError(f"{folder}: no {prefix}*_image.* with a _{mask_class}.tif; check both")
    return source_from_pairs(pairs, name=name, pixel_size=pixel_size, names=names)


@dataclass(frozen=True, eq=False)
class _Patch:
    ratio: np.ndarray  # float32 pixels / local background of the source field (1 = background)
    alpha: np.ndarray  # float32 opacity: 1 on the object and its halo, fading, 0 on neighbours
    mask: np.ndarray  # bool, the exact object
    field: str
    stats: tuple[float, float]  # relative noise and halo contrast of the source field


@dataclass(frozen=True, eq=False)
class _Background:
    field: str
    smooth: np.ndarray  # float32 local level, cells filled in from their surroundings
    noise: np.ndarray  # float32 fine texture; under the cells, texture from elsewhere
    stats: tuple[float, float]  # relative noise and halo contrast (nan: it had no cells)


@dataclass(frozen=True, eq=False)
class Library:
    """Cells, debris and backgrounds of some sources, resampled to one ``pixel_size``."""

    types: tuple[str, ...]
    cells: dict[str, list[_Patch]]
    areas: dict[str, tuple[int, int]]  # measured size range of each type (px at pixel_size)
    density: dict[str, float]  # median cells per megapixel in that type's fields
    debris: list[_Patch]
    debris_density: float
    backgrounds: list[_Background]
    pixel_size: float
    dtype: np.dtype


def _fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Push-pull interpolation: known pixels kept, holes filled smoothly from around them."""
    levels = [(np.where(known, values, 0.0), known.astype(np.float64))]
    while min(levels[-1][0].shape) > 2 and levels[-1][1].min() <= 0:
        vw, w = (np.pad(a, [(0, s % 2) for s in a.shape]) for a in levels[-1])
        vw, w = (a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).sum((1, 3)) for a in (vw, w))
        wc = np.minimum(w, 1.0)
        levels.append((np.divide(vw, w, out=np.zeros_like(vw), where=w > 0) * wc, wc))
    vw, w = levels[-1]
    val = np.divide(vw, w, out=np.full_like(vw, vw.sum() / max(w.sum(), 1e-9)), where=w > 0)
    for vw, w in reversed(levels[:-1]):  # vw is value × weight; weights are ≤ 1
        up = val.repeat(2, 0).repeat(2, 1)[: w.shape[0], : w.shape[1]]
        val = vw + (1 - w) * ndi.gaussian_filter(up, 1.0)
    return val


def _smooth_background(image: np.ndarray, holes: np.ndarray, step: int = 4) -> np.ndarray:
    """The local background level (σ ≈ 1.5 step px), the holes filled from around them."""
    (h, w), pad = image.shape, [(0, -image.shape[0] % step), (0, -image.shape[1] % step)]
    known = np.pad(~holes, pad).astype(np.float64)
    img = np.pad(image.astype(np.float64), pad, mode="edge") * known
    shape = (known.shape[0] // step, step, known.shape[1] // step, step)
    kw, iw = known.reshape(shape).sum((1, 3)), img.reshape(shape).sum((1, 3))
    low = _fill(np.divide(iw, kw, out=np.zeros_like(iw), where=kw > 0), kw > 0.25 * step**2)
    low = ndi.zoom(ndi.gaussian_filter(low, 1.5), step, order=1, mode="nearest", grid_mode=True)
    return low[:h, :w].astype(np.float32)


def _texture(noise: np.ndarray, holes: np.ndarray, rng, tries: int = 16) -> np.ndarray:
    """The field's noise, copied into the holes from cell-free places of the same field."""
    out, todo, (h, w) = np.where(holes, 0, noise).astype(np.float32), holes.copy(), holes.shape
    for _ in range(tries if holes.any() else 0):
        shift = (int(rng.integers(h // 8, h - h // 8)), int(rng.integers(w // 8, w - w // 8)))
        take = todo & ~np.roll(holes, shift, (0, 1))
        out[take], todo = np.roll(noise, shift, (0, 1))[take], todo & ~take
    return out


def _crop(a: np.ndarray, y0: int, y1: int, x0: int, x1: int, fill) -> np.ndarray:
    out = np.full((y1 - y0, x1 - x0), fill, dtype=a.dtype)
    ys, xs = slice(max(y0, 0), min(y1, a.shape[0])), slice(max(x0, 0), min(x1, a.shape[1]))
    out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = a[ys, xs]
    return out


def _halo(image: np.ndarray, dist: np.ndarray) -> tuple[int, float]:
    """Width and contrast of the cells' halo from the mean intensity profile around them:
    the last distance still a fifth of the largest difference off the plateau (13-15 px),
    and that largest difference relative to the plateau (optics set it as much as cells)."""
    if not (dist == 0).any() or dist.max() < 16:  # no cell, or no room around them
        return 3, float("nan")
    prof = np.array([image[(dist > d - 0.5) & (dist <= d + 0.5)].mean() for d in range(1, 16)])
    plateau = prof[-3:].mean()
    dev = np.abs(prof - plateau)
    width = int(np.clip(2 + np.flatnonzero(dev >= 0.2 * dev.max()).max(), 2, 12))
    return width, float(dev.max() / plateau) if plateau > 0 else float("nan")


def _patch(ratio, box, mask, others, soft, fade, field, stats) -> _Patch:
    """Crop ``box`` of a field: opaque on ``mask``, fading over ``soft``+``fade`` px, and
    kept off ``others`` (neighbours, holes, outside the image); masks are box-sized."""
    d = ndi.distance_transform_edt(~mask)
    apart = np.clip((ndi.distance_transform_edt(~others | mask) - 1) / max(soft, 1), 0, 1)
    alpha = np.where(mask, 1, np.minimum(np.clip((soft + fade - d) / fade, 0, 1), apart))
    r, outer = _crop(ratio, *box, fill=1.0), (d > soft) & (apart == 1)
    if outer.sum() >= 10:  # where the halo ends the level is the background's: make it 1
        r = r / np.median(r[outer])
    return _Patch(r.astype(np.float32), alpha.astype(np.float32), mask, field, stats)


def _field(img, lab, halo, feather, fid, rng):
    """Cells, debris and background of one field (already at the library's pixel size)."""
    dist = ndi.distance_transform_edt(lab == 0)
    hw, contrast = _halo(img, dist)
    hw = halo or hw
    holes, floor = dist <= hw + feather + 1, 1e-3 * max(float(img.max()), 1)
    smooth = np.maximum(_smooth_background(img, holes), floor)
    # objects with local contrast that nobody marked: small ones are debris to reuse, big
    # ones (an unmarked cell) are filled like the cells, so no unlabelled cell stays behind
    dev = ndi.gaussian_filter(img / smooth - 1, 1.0)
    comp = ndi.label(np.abs(dev) > 6 * 1.4826 * np.median(np.abs(dev[~holes][::7])))[0]
    comp[holes] = 0
    sizes, cell_sizes = np.bincount(comp.ravel()), np.bincount(lab.ravel())[1:]
    big = sizes > 0.1 * (np.median(cell_sizes[cell_sizes > 0]) if lab.any() else 100)
    big[0] = False
    if big.any():
        holes |= ndi.distance_transform_edt(~big[comp]) <= hw + feather + 1
        smooth = np.maximum(_smooth_background(img, holes), floor)
    noise, ratio = img - smooth, img / smooth
    stats = (1.4826 * float(np.median(np.abs(noise / smooth)[~holes][::7])) + 1e-6, contrast)
    cells, (h, w), m = [], lab.shape, hw + feather + 1
    for i, sl in enumerate(ndi.find_objects(lab), 1):
        if sl is None or 0 in (sl[0].start, sl[1].start) or sl[0].stop == h or sl[1].stop == w:
            continue  # cut by the image border: its shape is unknown
        box = (sl[0].start - m, sl[0].stop + m, sl[1].start - m, sl[1].stop + m)
        crop = _crop(lab, *box, fill=-1)  # -1: outside the image
        cells.append(_patch(ratio, box, _largest(crop == i), crop != 0, hw, feather, fid, stats))
    small, objects, debris = np.flatnonzero((sizes >= 4) & ~big)[1:], ndi.find_objects(comp), []
    for j in rng.permutation(small)[:100]:
        sl = objects[j - 1]
        box = (sl[0].start - 4, sl[0].stop + 4, sl[1].start - 4, sl[1].stop + 4)
        core = ndi.binary_dilation(_crop(comp, *box, fill=0) == j)
        debris.append(_patch(ratio, box, core, _crop(holes, *box, True), 0, 3, fid, stats))
    bg = _Background(fid, smooth, _texture(noise, holes, rng), stats)
    return cells, debris, len(small), bg


def build_library(
    sources: Sequence[Source], *, pixel_size: float | None = None, halo: int | None = None,
    feather: int = 3, seed: int = 0,
) -> Library:  # fmt: skip
    """Extract cells, debris and cell-free backgrounds from every field of ``sources``.

    Parameters
    ----------
    sources
        Two or more sources of distinct cell types, all of one modality and dtype.
    pixel_size
        The library's pixel size; default the coarsest of the sources (fields are only
        ever shrunk). Every field is resampled to it.
    halo
        Width in px of the ring kept around each mask (the cells' halo); default
        measured per field from the mean intensity profile around its cells.
    feather
        Width in px over which that ring fades into the new background.
    """
    if len(sources) < 2:
        raise ValueError(f"a co-culture needs 2 or more sources (cell types), got {len(sources)}")
    names, dtypes = [s.name for s in sources], {f.image.dtype for s in sources for f in s.fields}
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be distinct cell types, got {names}")
    if len(dtypes) > 1:
        msg = "a co-culture is imaged in one modality; build one library per modality"
        raise ValueError(f"sources have different dtypes {sorted(map(str, dtypes))}: {msg}")
    px, rng = pixel_size or max(s.pixel_size for s in sources), np.random.default_rng(seed)
    cells, areas, density, debris, dd, backgrounds = {}, {}, {}, [], [], []
    for src in sources:
        zoom, found, per_mpx = src.pixel_size / px, [], []
        for f in src.fields:
            img, lab = f.image.astype(np.float32), f.labels.astype(np.int32)
            if zoom != 1:
                img = ndi.zoom(img, zoom, order=1, grid_mode=True, mode="nearest")
                lab = ndi.zoom(lab, zoom, order=0, grid_mode=True, mode="nearest")
            c, d, n_debris, bg = _field(img, lab, halo, feather, f"{src.name}:{f.name}", rng)
            found, debris, backgrounds = found + c, debris + d, backgrounds + [bg]
            per_mpx.append(len(np.unique(lab[lab > 0])) / lab.size * 1e6)
            dd.append(n_debris / lab.size * 1e6)
        if found:  # drop fragments: a sliver a watershed cut off, a speck marked as a cell
            med = np.median([p.mask.sum() for p in found])
            found = [p for p in found if p.mask.sum() >= 0.15 * med]
        if not found:
            raise ValueError(f"source {src.name!r}: no whole cell off the border; add fields")
        sizes = [int(p.mask.sum()) for p in found]
        cells[src.name], areas[src.name] = found, (min(sizes), max(sizes))
        density[src.name] = float(np.median(per_mpx))
    return Library(tuple(names), cells, areas, density, debris, float(np.median(dd)),
                   backgrounds, px, np.dtype(dtypes.pop()))  # fmt: skip


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


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    return lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])) if n > 1 else mask


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


def split_sources(
    sources: Sequence[Source], *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Source], list[Source]]:
    """Split every source's fields into train and test by position (:func:`field_group`):
    no position, hence no original cell or background, on both sides."""
    train, test = [], []
    for i, src in enumerate(sources):
        groups = sorted({f.group for f in src.fields})
        if len(groups) < 2:
            msg = "a test set apart from training needs fields of two or more positions"
            raise ValueError(f"source {src.name!r} shows one position ({groups[0]}): {msg}")
        order = np.random.default_rng([seed, i]).permutation(groups)
        held = set(order[: min(len(groups) - 1, max(1, round(test_fraction * len(groups))))])
        for part, side in ((train, False), (test, True)):
            kept = tuple(f for f in src.fields if (f.group in held) == side)
            part.append(Source(src.name, kept, src.pixel_size))
    return train, test


_JOB: dict = {}
"""What the image writers of :func:`write_dataset` share (forked workers inherit it)."""


def _write_image(job: tuple[str, int, int]) -> set:
    from ..batch import write_tif

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

    from ..batch import write_atomic

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
