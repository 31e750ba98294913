"""What synthetic co-cultures (:mod:`.coculture`) are pasted from: per cell type a
:class:`Source` of real mono-culture fields with their instance masks, and the
:class:`Library` :func:`build_library` makes of them (every cell cut out with its halo,
as a ratio to its field's background, and the backgrounds with their cells filled in).
:func:`split_sources` keeps the positions of test fields out of training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    return lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])) if n > 1 else mask


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
