"""Whole-well mosaics segmented block by block, in bounded memory.

A stitched mosaic of 20000² pixels does not fit the way a field is segmented
(the plane, its model input, the probabilities and the labels all in memory:
about 10 GB). Here it is read lazily (tifffile's zarr view of a TIFF, tiled or
not, or an OME-Zarr image's full-resolution level) and segmented in square
*blocks* with a *margin* around each, the way a field is segmented
(:func:`segment.segment`), and the results are written as they come into chunked
zarr arrays on disk, then into tiled TIFFs or one OME-Zarr image:

- **one zoom** for the whole mosaic: the object size is estimated once, on its
  central crop (as for a field), or given;
- **one normalisation**: the percentile levels are those of the whole mosaic
  (a subsample of every block after the zoom, :func:`mosaic_levels`), not of each
  block, so a dim corner of the well stays dim;
- **one tile grid**: the zoom is taken as the nearest fraction p/q whose tile and tile
  step are whole image pixels (:func:`mosaic_grid`), and every block is cut into exactly
  the tiles the whole mosaic would be cut into, read with the support its resampling
  needs (:func:`grid_windows`); resampling works on exact coordinates
  (:func:`model_input.resample_plane`). So each block's probabilities, and its masks, are
  the whole mosaic's, bit for bit, wherever the mosaic's sides are multiples of q (the
  whole-image path's own grid is exact only then);
- **masks**: each pixel comes from the block whose core holds it; the block also sees
  three training object diameters of context beyond its core (at least one tile step);
- **objects**: an object belongs to the block whose core holds its centre (the
  mean of its pixels) and is written whole, margin included, where no earlier
  object lies; an object found again by the next block (its centre, there, on
  the other side of the seam) whose pixels are mostly written already is the
  same object and is dropped. Labels run over the whole mosaic (uint32).

``benchmarks/mosaic.py`` measures the peak memory on a 20000² mosaic and the
agreement with the in-memory path on a crop.

The block and tile geometry is :mod:`.mosaic_grid`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import ImageError
from .mosaic_grid import blocks, grid_windows, mosaic_grid

MOSAIC_PIXELS = 6144 * 6144
"""A TIFF plane with more pixels than this is segmented block by block (``cultureseg
segment``); below it, in memory. Measured with ``phase-cells``: an 8000² mosaic takes
2.2-2.3 GB in memory, 1.4 GB block by block (``benchmarks/mosaic.py``)."""

BLOCK = 2048
"""Side of a block's core, in image pixels."""

CHUNK = 1024
"""Chunk side of the zarr arrays the results are gathered in."""


@dataclass
class MosaicResult:
    """What :func:`segment_mosaic` made: zarr arrays on disk, by class name."""

    shape: tuple[int, int]
    zoom: float
    masks: dict = field(default_factory=dict)
    """``{class: zarr array (H, W) uint8}`` (derived classes included)."""
    objects: dict = field(default_factory=dict)
    """``{counted class: zarr array (H, W) uint32}`` of instance labels."""
    counts: dict = field(default_factory=dict)
    areas: dict = field(default_factory=dict)
    """Pixels of each class's mask."""
    rows: list = field(default_factory=list)
    """Object table rows (``table=True``), with mosaic coordinates."""
    uncertainty: float = 0.0
    """The mean of the blocks' :meth:`Segmentation.uncertainty`, by block area."""


def lazy_plane(path: str | Path):
    """The first series of a TIFF as a zarr array read on demand: ``(H, W)`` or ``(H, W, 3|4)``.

    Raises
    ------
    ImageError
        The file is not a TIFF holding one plane.
    """
    import tifffile
    import zarr

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
        z = zarr.open(tifffile.imread(path, aszarr=True, series=0, level=0), mode="r")
    except Exception as exc:
        raise ImageError(f"{path.name}: could not be read as a TIFF mosaic ({exc})") from exc
    spatial = "".join(a for a in axes if a in "YXS")
    others = tuple(i for i, a in enumerate(axes) if a not in "YXS")
    if spatial not in ("YX", "YXS") or any(shape[i] != 1 for i in others):
        raise ImageError(
            f"{path.name}: a {axes} stack of shape {shape}; a mosaic is segmented block by "
            "block only as one 2-D plane (gray or RGB): save the plane you want on its own"
        )
    if others:  # singleton axes (a time point, a z-slice): indexed away
        z = _Squeezed(z, others)
    return z


def lazy_source(path: str | Path, plane: int | None = None):
    """A mosaic's plane read on demand: a TIFF's (:func:`lazy_plane`) or an OME-Zarr image's
    full-resolution level (a dask array; ``plane`` picks a channel when it has several).

    Raises
    ------
    ImageError
        Neither, or a plane that is not there.
    """
    from . import omezarr

    path = Path(path)
    if not omezarr.is_image(path):
        if plane not in (None, 0):
            raise ImageError(
                f"{path.name}: a TIFF mosaic is read as one plane; save plane {plane} on its own"
            )
        return lazy_plane(path)
    arr = omezarr.read_array(path)  # (y, x) or (c, y, x), lazily
    if arr.ndim == 3 and plane is not None and 0 <= plane < arr.shape[0]:
        return arr[plane]
    if arr.ndim == 2 and plane in (None, 0):
        return arr
    raise ImageError(
        f"{path.name}: an OME-Zarr image of shape {tuple(arr.shape)}; a mosaic is segmented "
        "one 2-D plane at a time: choose a channel (--channel for a plate, --plane K)"
    )


class _Squeezed:
    """A zarr array with its singleton axes taken away (``[y0:y1, x0:x1]`` reads
    ``z[0, 0, y0:y1, x0:x1]``)."""

    def __init__(self, z, singles: tuple[int, ...]):
        self.z, self.singles = z, singles
        self.shape = tuple(n for i, n in enumerate(z.shape) if i not in singles)
        self.dtype, self.ndim = z.dtype, len(self.shape)

    def __getitem__(self, key):
        key = list(key) if isinstance(key, tuple) else [key]
        full = []
        for i in range(self.z.ndim):
            full.append(0 if i in self.singles else (key.pop(0) if key else slice(None)))
        return self.z[tuple(full)]


def mosaic_levels(source, spec, zoom: float, block: int = BLOCK, samples: int = 4_000_000):
    """The normalisation levels of a whole mosaic: percentiles of a regular subsample of
    every block's model input (after the zoom, as a field's are measured)."""
    from .model_input import levels_of, prepared_input

    h, w = source.shape[:2]
    n_blocks = -(-h // block) * -(-w // block)
    per = max(1, samples // n_blocks)
    picked = []
    for (y0, y1, x0, x1), _ in blocks((h, w), block, 0):
        x = prepared_input(np.asarray(source[y0:y1, x0:x1]), spec, zoom=zoom)
        step = max(1, int(np.sqrt(x.shape[1] * x.shape[2] / per)))
        picked.append(x[:, ::step, ::step].reshape(x.shape[0], -1))
    return levels_of(picked, spec.normalisation)


def _zarr(path: Path, shape, dtype):
    import zarr

    return zarr.open_array(
        store=str(path), mode="w", shape=shape, chunks=(CHUNK, CHUNK), dtype=dtype, fill_value=0
    )


def _centres(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts and mean row and column of labels ``1..n`` (index 0: background)."""
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1).astype(np.float64)
    rows = np.repeat(np.arange(labels.shape[0], dtype=np.float64), labels.shape[1])
    cy = np.bincount(flat, weights=rows, minlength=n + 1)
    del rows
    cols = np.tile(np.arange(labels.shape[1], dtype=np.float64), labels.shape[0])
    cx = np.bincount(flat, weights=cols, minlength=n + 1)
    safe = np.maximum(counts, 1)
    return counts, cy / safe, cx / safe


def segment_mosaic(
    bundle,
    source,
    work: str | Path,
    *,
    zoom: float,
    block: int = BLOCK,
    device: str = "auto",
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    tta: int | None = None,
    runtime: str = "auto",
    table: bool = False,
    info: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    seeds: dict[str, float] | None = None,
) -> MosaicResult:
    """Segment a lazily read plane block by block (module docstring).

    Parameters
    ----------
    source
        ``(H, W)`` or ``(H, W, 3|4)`` array read on slicing (:func:`lazy_plane`).
    work
        A new or empty folder for the zarr arrays (made if missing).
    zoom
        The whole mosaic's zoom (:func:`scale.choose_zoom` on its central crop); used as
        the nearest fraction of :func:`mosaic_grid`.
    tile, overlap
        The tiles (default: the bundle's); they are not grown to fit (``fit=False``).
    block
        Side of a block's core (image pixels), rounded up to whole tile steps.
    table
        Also measure every object (:func:`tables.object_rows`) in its block.
    info
        Columns put first in every table row.
    progress
        ``progress(done, total)`` after each block.
    seeds
        Distance seed thresholds by class (:meth:`Segmentation.with_seeds`).
    """
    from .images import as_plane, release_memory
    from .model_input import to_model_input
    from .segment import segment_input
    from .tiling import run_to_end

    cfg = bundle.config
    if cfg.input.resize_to:
        raise ValueError(
            f"{cfg.name} sees whole images resized to {cfg.input.resize_to}² "
            "(it cannot be run block by block): crop the mosaic into fields first"
        )
    h, w = source.shape[:2]
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):  # never delete what is there: it may not be ours
        raise ValueError(f"{work}: the folder for a mosaic's blocks must be new or empty")
    grid = mosaic_grid(bundle, zoom, tile, overlap)
    zoom = grid.zoom
    levels = mosaic_levels(source, cfg.input, zoom, block)
    names = [c.name for c in cfg.classes] + [d.name for d in cfg.derived]
    counted = [c.name for c in cfg.classes if c.instances]
    out = MosaicResult((h, w), zoom)
    out.masks = {n: _zarr(work / f"{n}.zarr", (h, w), "uint8") for n in names}
    out.objects = {n: _zarr(work / f"{n}_instances.zarr", (h, w), "uint32") for n in counted}
    out.counts = dict.fromkeys(counted, 0)
    out.areas = dict.fromkeys(names, 0)
    windows = grid_windows((h, w), block, grid)
    unsure = 0.0
    for i, (core, outer) in enumerate(windows):
        oy0, oy1, ox0, ox1 = outer
        cy0, cy1, cx0, cx1 = (core[0] - oy0, core[1] - oy0, core[2] - ox0, core[3] - ox0)
        # read a little more than the window, resample, and cut the window out on the
        # network's grid: its model input is then the whole mosaic's, pixel for pixel
        ry0, ry1 = max(0, oy0 - grid.pad), min(h, oy1 + grid.pad)
        rx0, rx1 = max(0, ox0 - grid.pad), min(w, ox1 + grid.pad)
        read = as_plane(np.asarray(source[ry0:ry1, rx0:rx1]))
        x = to_model_input(read, cfg.input, zoom=zoom, levels=levels)
        y0, x0 = (oy0 - ry0) * grid.p // grid.q, (ox0 - rx0) * grid.p // grid.q
        ny = (oy1 - oy0) * grid.p // grid.q if oy1 < h else x.shape[1] - y0
        nx = (ox1 - ox0) * grid.p // grid.q if ox1 < w else x.shape[2] - x0
        x = np.ascontiguousarray(x[:, y0 : y0 + ny, x0 : x0 + nx])
        plane = read[oy0 - ry0 : oy1 - ry0, ox0 - rx0 : ox1 - rx0]  # for the table
        seg = run_to_end(
            segment_input(
                bundle,
                x,
                (oy1 - oy0, ox1 - ox0),
                zoom=zoom,
                device=device,
                tile=grid.tile,
                overlap=grid.overlap,
                fit=False,
                batch_size=batch_size,
                tta=tta,
                runtime=runtime,
            )
        )
        del x
        seg = seg.with_seeds(seeds or {})  # the user's splitting, if any
        unsure += seg.uncertainty() * (core[1] - core[0]) * (core[3] - core[2])
        masks = seg.masks()
        for n, m in masks.items():
            part = m[cy0:cy1, cx0:cx1]
            out.masks[n][core[0] : core[1], core[2] : core[3]] = part.astype(np.uint8)
            out.areas[n] += int(np.count_nonzero(part))
        written = {}
        for n in counted:
            labels = seg.instances(n, masks[n])
            written[n] = _write_owned(labels, out, n, outer, (cy0, cy1, cx0, cx1))
        if table and written:
            out.rows += _block_rows(written, masks, plane, outer, info or {})
        del seg, masks, plane, written
        release_memory()
        if progress is not None:
            progress(i + 1, len(windows))
    out.uncertainty = unsure / (h * w)
    return out


def _write_owned(labels, out: MosaicResult, name: str, outer, core) -> np.ndarray:
    """Write the objects of ``labels`` (one block's) whose centre is in the core; returns
    the block's window of the mosaic's labels with only those objects (the rest 0)."""
    oy0, oy1, ox0, ox1 = outer
    cy0, cy1, cx0, cx1 = core
    n = int(labels.max(initial=0))
    target = out.objects[name]
    window = np.asarray(target[oy0:oy1, ox0:ox1])
    if n == 0:
        return np.zeros(window.shape, np.uint32)
    counts, cy, cx = _centres(labels, n)
    owned = (cy >= cy0) & (cy < cy1) & (cx >= cx0) & (cx < cx1) & (counts > 0)
    owned[0] = False
    free = window == 0
    # pixels each owned object may take (where no earlier object lies)
    takes = np.bincount(labels[free].ravel(), minlength=n + 1)
    keep = owned & (takes >= 0.5 * counts)  # mostly written already: the same object again
    ids = np.zeros(n + 1, np.uint32)
    k = int(keep.sum())
    ids[keep] = out.counts[name] + np.arange(1, k + 1, dtype=np.uint32)
    out.counts[name] += k
    new = ids[labels]
    new[~free] = 0
    window[new > 0] = new[new > 0]
    target[oy0:oy1, ox0:ox1] = window
    return new


def _block_rows(written, masks, plane, outer, info) -> list[dict]:
    """Table rows of the objects one block wrote, their centroids in mosaic pixels."""
    from .postprocess import instances
    from .tables import object_rows

    gray = plane.mean(axis=-1, dtype="float32") if plane.ndim == 3 else plane
    everything = {n: written[n] if n in written else instances(m) for n, m in masks.items()}
    rows = object_rows(everything, gray, counted=list(written), info=info)
    oy0, _, ox0, _ = outer
    for r in rows:
        for key, shift in (("centroid_y", oy0), ("centroid_x", ox0)):
            if key in r:
                r[key] = round(float(r[key]) + shift, 2)
    return rows


def write_tiled_tif(path: str | Path, z, *, tile: int = 512) -> Path:
    """Write a 2-D zarr array as a tiled, zlib-compressed TIFF, one band of tiles at a time
    (what Fiji, QuPath and napari open without reading it whole)."""
    import tifffile

    from .atomic import write_atomic

    h, w = z.shape

    def tiles():
        for y in range(0, h, tile):
            band = np.asarray(z[y : y + tile, :])
            for x in range(0, w, tile):
                t = np.zeros((tile, tile), z.dtype)
                part = band[:, x : x + tile]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    path = Path(path)
    return write_atomic(
        path,
        lambda tmp: tifffile.imwrite(
            tmp, tiles(), shape=(h, w), dtype=z.dtype, tile=(tile, tile), compression="zlib"
        ),
    )
