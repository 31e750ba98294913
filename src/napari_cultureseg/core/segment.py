"""Segment one image with one bundle: the engine behind the widget and the CLI.

>>> from napari_cultureseg.core.segment import segment
>>> from napari_cultureseg.core.tiling import run_to_end
>>> result = run_to_end(segment(bundle, image))           # doctest: +SKIP
>>> masks = result.masks()            # {class name: bool (H, W)}, classes may overlap

The result, :class:`.segmentation.Segmentation`, is in :mod:`.segmentation`.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from dataclasses import replace

import numpy as np

from .bundle_config import (
    check_zoom,
    flow_channels,
)
from .bundles import Bundle
from .device import TileTooLarge, batch_for, resilient, resolve_device
from .images import as_plane
from .model_input import fit_shape, resample_plane, resize_planes, to_model_input
from .nets import output_stride
from .runtimes import predictor_for
from .segmentation import Segmentation
from .tiling import Progress, fit_tile, predict_tiled


def segment(
    bundle: Bundle,
    image: np.ndarray,
    *,
    device: str = "auto",
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    fit: bool | None = None,
    zoom: float = 1.0,
    tta: int | None = None,
    levels=None,
    runtime: str = "auto",
) -> Generator[Progress, None, Segmentation]:
    """Segment a 2-D image (gray or RGB) with ``bundle``, tile by tile.

    A bundle whose input spec has ``resize_to`` (Sadanandan et al.'s spheroid model: 480)
    sees the whole image resized to that size instead, in one pass
    (:func:`predict_whole`), and its probabilities are resized back
    (bilinearly) to the image's shape; masks are then cleaned at full size
    with ``min_size`` scaled by the area ratio: the same objects Sadanandan et al. 2017 gets
    by cleaning at 480² (``spheroid.spheroid_mask``, ``upsample="prob"``),
    with smoother outlines.

    Parameters
    ----------
    bundle
        The model.
    image
        ``(H, W)`` or ``(H, W, 3|4)``, any numeric dtype (see :func:`images.as_plane`).
    device
        ``auto`` (CUDA, then MPS, then CPU) or an explicit device.
    tile, overlap
        Tiling (ignored by a ``resize_to`` bundle). By default the bundle's
        tile, grown by up to 25 % when that covers the image with fewer
        pixels at the same pixel overlap (:func:`tiling.fit_tile`: a 1024²
        image takes 4 tiles of 576² instead of 9 of 512²).
    fit
        Grow the tile that way (default: only when ``tile`` is not given).
    batch_size
        Tiles per forward pass; default 1 on the CPU (measured: 512² tiles of a
        1022×1024 image take 0.72 s one by one, 1.07 s in pairs, 1.67 s in fours
        on 2 cores: batches only cost cache there) and on a GPU as many as fit
        in half its free memory (:func:`device.batch_for`). When the device runs
        out of memory the batch is halved, then the tile, and the progress says so
        (:attr:`tiling.Progress.note`, and a RuntimeWarning).
    zoom
        Resample the image by this factor before the network (> 1 enlarges), so
        that its objects have the size the model learnt (see :mod:`.scale`:
        :func:`scale.zoom_for` from a diameter or pixel size,
        :func:`scale.estimate_diameter` to measure it); the probabilities come
        back on the image's own grid. Ignored by ``resize_to`` bundles.
    tta
        Test-time augmentation: average the predictions of this many flipped and
        rotated copies of every tile (1: none, 4: flips, 8: flips and rotations);
        costs as many forward passes. None: the model's own (``BundleConfig.tta``,
        chosen on its validation images; 1 for most).
    runtime
        ``auto`` (ONNX Runtime on the CPU when installed, else torch), ``torch``, or
        ``onnx`` (:mod:`.runtimes`: about twice as fast on a CPU, the same masks; falls
        back to torch, saying why in the progress, where it cannot run).
    levels
        Each input channel's normalisation ``(low, high)``, measured on more than
        ``image`` (a block of a whole-well mosaic, :mod:`.mosaic`); default: its own
        percentiles.

    Yields
    ------
    Progress
        After every batch of tiles.

    Returns
    -------
    Segmentation
    """

    cfg = bundle.config
    plane = as_plane(image)
    zoom = 1.0 if cfg.input.resize_to else check_zoom(zoom)
    x = to_model_input(plane, cfg.input, zoom=zoom, levels=levels)
    shape = plane.shape[:2]
    del plane, image
    return (
        yield from segment_input(
            bundle,
            x,
            shape,
            zoom=zoom,
            device=device,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            fit=fit,
            tta=tta,
            runtime=runtime,
        )
    )


def segment_input(
    bundle: Bundle,
    x: np.ndarray,
    shape: tuple[int, int],
    *,
    zoom: float = 1.0,
    device: str = "auto",
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    fit: bool | None = None,
    tta: int | None = None,
    runtime: str = "auto",
) -> Generator[Progress, None, Segmentation]:
    """:func:`segment` from the image's model input ``x`` (:func:`model_input.to_model_input`,
    ``(C, h, w)`` on the network's grid) and the image's own ``shape``: how a block of a
    mosaic is segmented from a window of its padded, resampled input (:mod:`.mosaic`).
    The other parameters are :func:`segment`'s."""
    cfg = bundle.config
    tta = cfg.tta if tta is None else tta
    device = resolve_device(device)
    if batch_size is None:  # for the largest tile fit_tile may choose
        batch_size = batch_for(device, int(1.25 * (tile or cfg.tile)))
    run = predictor_for(bundle, device, runtime)
    notes: list[str] = [run.note] if run.note else []
    predictor = augmented(
        resilient(run.predict, device, on_retry=notes.append),
        tta,
        tuple(flow_channels(cfg.classes).values()),
    )
    probs, _ = yield from predict(
        x,
        predictor,
        cfg,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        fit=fit,
        back=False,
        notes=notes,
    )
    return Segmentation(
        probs, cfg.classes, cfg.derived, zoom, shape=shape, diameter=cfg.scale.diameter
    )


TTA = (1, 2, 4, 8)
"""Test-time augmentation sizes: none, a horizontal flip, both flips, all 8 symmetries."""


def augmented(predictor, tta: int = 1, flows=()):
    """``predictor`` averaged over ``tta`` flipped and rotated copies of each batch.

    The copies are the first ``tta`` of: identity, horizontal flip, vertical
    flip, both flips (= 180° rotation), then the four transposed versions
    (90° rotations with and without flips); each prediction is mapped back
    before averaging. Class, border and distance channels are scalars per
    pixel, unchanged by these symmetries; the ``flows`` pairs (row, column
    channels of a flow, stored as ``(v + 1) / 2``) are vectors and are turned back
    with the pixels.
    """
    if tta not in TTA:
        raise ValueError(f"test-time augmentation takes 1, 2, 4 or 8 copies, not {tta}")
    if tta == 1:
        return predictor

    def flip(a, k):
        if k & 1:
            a = a[..., ::-1]
        if k & 2:
            a = a[..., ::-1, :]
        if k & 4:
            a = np.swapaxes(a, -1, -2)
        return a

    def unflip(a, k):  # the inverse: undo the transpose first
        if k & 4:
            a = np.swapaxes(a, -1, -2)
        if k & 2:
            a = a[..., ::-1, :]
        if k & 1:
            a = a[..., ::-1]
        if flows and k:
            a = np.array(a)
            for cy, cx in flows:
                if k & 4:  # a transposed field: its components swap
                    a[:, [cy, cx]] = a[:, [cx, cy]]
                if k & 2:
                    a[:, cy] = 1.0 - a[:, cy]
                if k & 1:
                    a[:, cx] = 1.0 - a[:, cx]
        return a

    def predict(batch: np.ndarray) -> np.ndarray:
        total = None
        for k in range(tta):
            out = unflip(np.asarray(predictor(np.ascontiguousarray(flip(batch, k))), np.float32), k)
            total = out.copy() if total is None else total + out
        return total / tta

    return predict


def predict(
    x: np.ndarray,
    predictor,
    cfg,
    *,
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 1,
    fit: bool | None = None,
    out_shape: tuple[int, int] | None = None,
    back: bool = True,
    notes: list[str] | None = None,
) -> Generator[Progress, None, tuple[np.ndarray, float]]:
    """Probabilities of a ``(C, H, W)`` model input, the way ``cfg`` (a BundleConfig) says.

    Tiled at the bundle's tile and overlap, or, for a ``resize_to`` bundle,
    resized and predicted whole, then resized back. ``predictor`` maps a
    ``(B, C, h, w)`` batch to probabilities (e.g. :meth:`Bundle.predictor`, or
    a network being trained, for the Fine-tune widget's preview).

    ``out_shape``: the image's own shape when ``x`` was resampled to it (a zoom,
    see :func:`segment`); the probabilities are resampled back to it. ``back``
    False: they stay on the grid the network saw (a ``resize_to`` bundle's, or
    ``x``'s), for :class:`Segmentation` to resample on demand.

    ``notes``: messages for the user (e.g. a :func:`device.resilient` predictor's),
    relayed in every :class:`Progress` and warned about; when one tile does not
    fit in the device's memory (:class:`device.TileTooLarge`) the tiles are
    halved (down to :data:`MIN_TILE`) and the image predicted again.

    Returns ``(probabilities (K', H, W), scale)``, ``scale`` being image pixels
    per network pixel by area (see :attr:`Segmentation.scale`).
    """
    notes = [] if notes is None else notes
    told = [0]  # how many notes were warned about, across the retries below
    full = tuple(out_shape) if out_shape is not None else x.shape[1:]
    stride = output_stride(cfg.architecture, cfg.params)
    if cfg.input.resize_to:  # the whole image in one pass, as the model was trained
        x = resize_planes(x, fit_shape(full, cfg.input.resize_to))
        probs = yield from _relay(predict_whole(x, predictor, align=stride), notes, told)
    else:
        if overlap is None:
            overlap = cfg.overlap
        if fit is None:
            fit = tile is None
        tile = int(tile or cfg.tile)
        if fit and tile % stride == 0:  # grown a little if that means fewer tiles
            tile, overlap = fit_tile(x.shape[1:], tile, overlap, align=stride)
        if tile % stride:
            raise ValueError(
                f"tile must be a multiple of {stride} for this model, got {tile}; "
                f"try {max(stride, tile // stride * stride)}"
            )
        while True:
            try:
                probs = yield from _relay(
                    predict_tiled(
                        x,
                        predictor,
                        tile=tile,
                        overlap=overlap,
                        batch_size=batch_size,
                        n_out=cfg.n_outputs,
                        align=stride,
                    ),
                    notes,
                    told,
                )
                break
            except TileTooLarge as exc:
                smaller = tile // 2 // stride * stride
                if smaller < max(MIN_TILE, stride):
                    raise TileTooLarge(tile, exc.device) from exc
                notes.append(
                    f"{exc}; segmenting again with {smaller}² tiles (slower); "
                    f"to avoid this, give a tile of {smaller} or segment on the CPU"
                )
                tile = smaller
    scale = 1.0
    if probs.shape[1:] != full:
        scale = full[0] * full[1] / (probs.shape[1] * probs.shape[2])
        if back:
            probs = np.stack([np.clip(resample_plane(p, full), 0.0, 1.0) for p in probs])
    return probs, scale


MIN_TILE = 64
"""The smallest tile :func:`predict` falls back to when a device runs out of memory."""


def _relay(gen, notes: list[str], told: list[int]):
    """Run a progress generator, giving every :class:`Progress` the newest of ``notes`` and
    warning once about each note (``told[0]``: how many were warned about already)."""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        for n in notes[told[0] :]:
            warnings.warn(n, RuntimeWarning, stacklevel=2)
        told[0] = len(notes)
        yield replace(p, note=notes[-1]) if notes else p


def predict_whole(
    x: np.ndarray, predictor, *, align: int = 1
) -> Generator[Progress, None, np.ndarray]:
    """Predict a ``(C, H, W)`` image in one pass; yields one :class:`Progress`.

    The image is reflect-padded at the bottom/right to multiples of ``align``
    (the network's stride) and the output cropped back, so nothing but the
    image itself (and less than ``align`` pixels of its mirror) is seen.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % align, -w % align
    mode = "reflect" if ph < h and pw < w else "symmetric"
    xp = np.pad(np.asarray(x, np.float32), ((0, 0), (0, ph), (0, pw)), mode=mode)
    out = np.asarray(predictor(xp[None]), np.float32)[0, :, :h, :w]
    yield Progress(1, 1)
    return out
