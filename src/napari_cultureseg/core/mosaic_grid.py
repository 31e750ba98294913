"""Where a mosaic's blocks and tiles lie (see :mod:`.mosaic`).

A mosaic is segmented in blocks, each cut into exactly the tiles the whole mosaic
would be cut into in memory (``segment(..., tile=tile, fit=False)``), so that block by
block and in one piece give the same masks bit for bit: :func:`mosaic_grid` takes the
zoom as a fraction p/q whose tile and tile step are whole image pixels, and
:func:`grid_windows` puts every block's window on that tile grid, around every tile that
touches its core.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def blocks(shape: tuple[int, int], block: int, margin: int) -> Iterator[tuple[tuple, tuple]]:
    """``(core, outer)`` windows, each ``(y0, y1, x0, x1)``, row by row over ``shape``."""
    h, w = shape
    for y in range(0, h, block):
        for x in range(0, w, block):
            core = (y, min(h, y + block), x, min(w, x + block))
            outer = (
                max(0, y - margin),
                min(h, y + block + margin),
                max(0, x - margin),
                min(w, x + block + margin),
            )
            yield core, outer


@dataclass(frozen=True)
class Grid:
    """Where a mosaic's tiles lie: the tiles the whole mosaic would be cut into in memory
    (``segment(..., tile=tile, fit=False)``), each a whole number of image pixels."""

    p: int
    q: int
    """The zoom, ``p / q`` (``p`` divides both the tile and the step)."""
    tile: int
    """Tile side on the network's grid."""
    overlap: float
    step: int
    """Network pixels between neighbouring tiles' starts (:func:`tiling.tile_step`)."""
    stride: int
    """The network's output stride: planes are padded to its multiples."""
    context: int
    """Image pixels every block sees beyond its core: three training object diameters, so an
    object whose centre is in the core lies in the block whole."""

    @property
    def zoom(self) -> float:
        return self.p / self.q

    @property
    def step_px(self) -> int:
        """A tile step in image pixels."""
        return self.step * self.q // self.p

    @property
    def tile_px(self) -> int:
        return self.tile * self.q // self.p

    @property
    def pad(self) -> int:
        """Image pixels read beyond a block's window for the resampling's support (the
        anti-aliasing Gaussian when shrinking, the 3×3 median, the bilinear step), a
        multiple of ``q`` so the window's edge stays a whole network pixel."""
        sigma = max(0.0, (self.q / self.p - 1.0) / 2.0)
        return self.q * int(np.ceil((4.0 * sigma + 4.0) / self.q))


def mosaic_grid(bundle, zoom: float, tile: int | None = None, overlap: float | None = None) -> Grid:
    """The tile grid of a mosaic at (about) ``zoom``: the zoom becomes the nearest fraction
    ``p / q`` (q ≤ 1024) whose ``p`` divides the tile and the tile step, so that every tile
    starts and ends on a whole image pixel. With the shipped tiles (512, step 384: p up to
    128) that moves the zoom by at most zoom / 256 (0.4 % at 1, 1.6 % at 4), far less than
    an estimated object size is sure of."""
    from math import ceil, gcd

    from .nets import output_stride
    from .tiling import tile_step

    cfg = bundle.config
    stride = output_stride(cfg.architecture, cfg.params)
    tile = int(tile or cfg.tile)
    if tile % stride:
        raise ValueError(f"tile must be a multiple of {stride} for this model, got {tile}")
    overlap = cfg.overlap if overlap is None else float(overlap)
    step = tile_step(tile, overlap, stride)
    g = gcd(tile, step)
    best = None
    for p in (d for d in range(1, g + 1) if g % d == 0):
        for q in {max(1, int(p / zoom)), max(1, int(p / zoom) + 1)}:
            if q <= 1024 and (best is None or abs(np.log(p / q / zoom)) < best[0]):
                best = (abs(np.log(p / q / zoom)), p // gcd(p, q), q // gcd(p, q))
    _, p, q = best
    d = cfg.scale.diameter or 0.0
    net = max(3.0 * d, 3.0 * (cfg.input.normalisation.flatten or 0.0))
    return Grid(p, q, tile, overlap, step, stride, int(ceil(net * q / p)))


def grid_windows(shape: tuple[int, int], block: int, grid: Grid) -> list[tuple[tuple, tuple]]:
    """``(core, outer)`` windows ``(y0, y1, x0, x1)`` of the blocks, row by row.

    Cores are ``block`` pixels (rounded up to whole tile steps) and tile the plane. An
    outer window starts on the tile grid a whole number of steps before its core and ends
    a whole number of steps (plus one tile) after, so the tiles a block is cut into are
    exactly the whole mosaic's tiles, and every tile that touches the core is among them;
    it holds the core's ``context`` on each side. A core near the mosaic's end takes
    the window to the end, where the last tile lies flush with the border as the whole
    mosaic's does.
    """
    from math import ceil

    from .model_input import zoomed_shape

    s, t, ctx = grid.step_px, grid.tile_px, grid.context
    block = max(s, -(-block // s) * s)

    def axis(n: int) -> list[tuple[int, int, int, int]]:
        # the whole plane's last tile lies flush with its padded end (tiling.tile_starts)
        padded = max(grid.tile, -(-zoomed_shape((n, 1), grid.zoom)[0] // grid.stride) * grid.stride)
        flush = (padded - grid.tile) * grid.q // grid.p
        out = []
        for c0 in range(0, n, block):
            c1 = min(n, c0 + block)
            k = max(1, ceil(ctx / s), ceil(t / s) - 1)
            o0 = max(0, c0 - k * s)
            need = max(c1 + ctx, c1 - s + t)
            o1 = o0 + t + max(0, ceil((need - o0 - t) / s)) * s
            if c1 + t + s >= n or o1 >= n:  # the mosaic's last tile touches this core
                o1 = n
                o0 = min(o0, flush // s * s)  # and lies in the window
            out.append((c0, c1, o0, o1))
        return out

    rows, cols = axis(shape[0]), axis(shape[1])
    return [
        ((y0, y1, x0, x1), (oy0, oy1, ox0, ox1))
        for y0, y1, oy0, oy1 in rows
        for x0, x1, ox0, ox1 in cols
    ]
