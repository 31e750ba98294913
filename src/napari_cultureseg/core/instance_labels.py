"""Instance label images after :mod:`.postprocess`: labels found on the network's grid
carried onto the image's (:func:`transfer_labels`). Per-object measurements are
:func:`.tables.object_rows`' (one implementation for the tables and everything else).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .model_input import bilinear_neighbours
from .postprocess import _close_gaps, _label_leftovers, _unclaimed, object_sizes


def transfer_labels(
    labels: np.ndarray, mask: np.ndarray, *, min_size: int = 0, rows: int = 1024
) -> np.ndarray:
    """Instance labels found on another grid (the network's), carried onto ``mask``'s grid.

    Objects are separated where the model sees them at the size it learnt (see
    :meth:`segmentation.Segmentation.instances`), and drawn with the outline of
    ``mask``, the class's mask on the image's own grid. Every pixel of ``mask``
    takes the object with the most bilinear weight among its four neighbours on
    ``labels``' grid (:func:`_vote`: where two objects meet the line is
    interpolated); where none of them is an object (the outline of the smoother,
    resampled mask) it takes the label of an adjacent pixel, growing by at most
    the grid ratio + 1 pixels; parts of
    ``mask`` that no object reaches (e.g. an object a user drew) become objects
    of their own, dropped below ``min_size`` pixels. Labels outside ``mask`` are
    cut. Band by band, so a whole-well mosaic needs no whole-image temporary
    beyond the output.

    Returns
    -------
    numpy.ndarray
        uint16 labels (uint32 from 65 535 objects on), sequential.
    """
    labels = np.asarray(labels)
    mask = np.asarray(mask, bool)
    (h, w), (H, W) = labels.shape, mask.shape
    reach = int(np.ceil(max(H / h, W / w))) + 1
    n = int(labels.max()) if labels.size else 0
    out = np.zeros((H, W), np.uint16 if n < 65535 else np.uint32)
    ry, rx = bilinear_neighbours(h, H), bilinear_neighbours(w, W)
    for y0 in range(0, H, rows):
        y1 = min(H, y0 + rows)
        ys, ye = max(0, y0 - reach), min(H, y1 + reach)
        m = mask[ys:ye]
        sub = np.zeros(m.shape, out.dtype)
        for r in range(ys, ye, 256):  # the vote's temporaries: 256 rows at a time
            r1 = min(ye, r + 256)
            sub[r - ys : r1 - ys] = _vote(labels, ry, rx, r, r1)
        sub[~m] = 0
        need = m & (sub == 0)
        for _ in range(reach):
            if not need.any():
                break
            grown = ndi.grey_dilation(sub, size=(3, 3))
            fill = need & (grown > 0)
            sub[fill] = grown[fill]
            need &= ~fill
        out[y0:y1] = sub[y0 - ys : y0 - ys + (y1 - y0)]
    out, n, _ = _label_leftovers(out, _unclaimed(mask, out), n, min_size)
    present = object_sizes(out, n) > 0
    present[0] = False
    return _close_gaps(out, present)[0]


def _vote(labels: np.ndarray, ry, rx, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of the target grid: each pixel takes the object label with the most
    bilinear weight among its four source neighbours (background does not vote), so the
    line between two objects is interpolated, not a staircase of source pixels."""
    (y0, y1, wy), (x0, x1, wx) = (a[r0:r1] for a in ry), rx
    wy, wx = wy[:, None], wx[None, :]
    cand = [labels[y0][:, x0], labels[y0][:, x1], labels[y1][:, x0], labels[y1][:, x1]]
    weights = [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx]
    best = np.zeros(cand[0].shape, labels.dtype)
    best_w = np.zeros(cand[0].shape, np.float32)
    for c in cand:
        score = sum(np.where(c == d, w, np.float32(0)) for d, w in zip(cand, weights, strict=True))
        better = (c > 0) & (score > best_w)
        best[better], best_w[better] = c[better], score[better]
    return best
