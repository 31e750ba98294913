"""Object scale: how big a model's objects were in training, and how big they are in an image.

A bundle records the median object diameter of its training data, in the
pixels the network saw (:class:`bundle_config.ScaleSpec`). Before a new image goes
through the network it is resampled by

    zoom = training diameter / the image's object diameter

so that its objects have the size the model learnt, and the probabilities are
resampled back to the image's own grid (:func:`segment.segment`). The image's
diameter comes from the user (a diameter in pixels, or a pixel size when the
bundle knows its own), or is estimated (:func:`estimate_diameter`):

``objects``
    Segment the image at its own scale, measure the median diameter of the
    reference class's objects, resample by the zoom this gives and measure
    again (cellpose's size model refines its estimate the same way).
``all-objects``
    The same with every counted class whose training size the model records
    (nuclei and cells), their zooms averaged (geometric mean, by object count).
``coarse``
    ``objects`` whose first pass sees the image at half its size: a model that
    cuts cells larger than its training size into pieces of that size (it
    learnt with random zooms, so pieces of the right size look plausible to it)
    sees such cells whole, and up to three passes refine the estimate.
``confidence``
    Segment a crop at a few zooms and keep the one where the model is most
    certain (the mean of ``|p - 0.5|`` over the pixels it calls foreground).

``benchmarks/scale.py`` measures both on test images resampled from 0.5× to
2× (``benchmarks/results/scale.json``); ``objects`` is the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .bundle_config import ESTIMATORS, ZOOM_LIMITS, check_zoom


def object_diameters(mask: np.ndarray, *, min_area: int = 4) -> np.ndarray:
    """Equivalent diameters ``2·sqrt(area/π)`` (px) of the objects of a mask or label image.

    A binary mask is split into 8-connected components; objects smaller than
    ``min_area`` pixels (specks) are left out.
    """
    from .targets import as_labels

    labels = as_labels(mask)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas >= min_area]
    return 2.0 * np.sqrt(areas / np.pi)


def median_diameter(masks: Iterable[np.ndarray], *, min_objects: int = 1) -> float | None:
    """Median equivalent diameter over all objects of several masks, or None if too few."""
    d = [object_diameters(m) for m in masks]
    d = np.concatenate(d) if d else np.zeros(0)
    return float(np.median(d)) if d.size >= min_objects else None


def zoom_for(
    bundle_scale, *, diameter: float | None = None, pixel_size: float | None = None
) -> float:
    """The zoom that gives an image's objects the model's training size.

    Parameters
    ----------
    bundle_scale
        The model's :class:`bundle_config.ScaleSpec`.
    diameter
        Median object diameter in the image (px, of the model's reference class).
    pixel_size
        The image's pixel size (µm); used when the model knows its own.

    Raises
    ------
    ValueError
        The model does not record the scale needed, or the zoom is absurd.
    """
    if diameter is not None:
        if not bundle_scale.diameter:
            raise ValueError(
                "this model does not record the object size it was trained at; "
                "segment at the image's own scale (no diameter)"
            )
        if not diameter > 0:
            raise ValueError(
                f"the object diameter must be a positive number of pixels, not {diameter}"
            )
        return check_zoom(bundle_scale.diameter / float(diameter))
    if pixel_size is not None:
        if not bundle_scale.pixel_size:
            raise ValueError(
                "this model does not know the pixel size of its training data; "
                "give the object diameter in pixels instead"
            )
        if not pixel_size > 0:
            raise ValueError(f"the pixel size must be a positive number of µm, not {pixel_size}")
        return check_zoom(float(pixel_size) / bundle_scale.pixel_size)
    return 1.0


def pixel_size_of(path) -> float | None:
    """The pixel size (µm) an OME-TIFF or an ImageJ/resolution-tagged TIFF records, else None.

    Only square pixels in µm (or a unit convertible to it) are trusted.
    """
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    to_um = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "\\u00B5m": 1.0}
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                from xml.etree import ElementTree

                root = ElementTree.fromstring(tif.ome_metadata)
                for el in root.iter():
                    if el.tag.endswith("Pixels"):
                        sx, sy = el.get("PhysicalSizeX"), el.get("PhysicalSizeY")
                        unit = el.get("PhysicalSizeXUnit", "µm")
                        if sx and (sy is None or abs(float(sx) - float(sy)) < 1e-6 * float(sx)):
                            return float(sx) * to_um.get(unit, np.nan) or None
            page = tif.pages.first
            tags = page.tags
            if "XResolution" in tags and "ResolutionUnit" in tags:
                num, den = tags["XResolution"].value
                unit = {2: 25400.0, 3: 10000.0}.get(int(tags["ResolutionUnit"].value))
                ij = tif.imagej_metadata or {}
                if ij.get("unit") in to_um:  # ImageJ: pixels per unit, unit in metadata
                    unit = to_um[ij["unit"]]
                if unit and num > 0 and den > 0 and num / den > 1:
                    return unit * den / num
    except Exception:  # metadata is a hint; an unreadable tag means "unknown"
        return None
    return None


def choose_zoom(
    bundle,
    plane: np.ndarray,
    *,
    diameter="auto",
    pixel_size: float | None = None,
    path=None,
    device: str = "auto",
) -> tuple[float, str]:
    """The zoom for one image, and a few words on where it came from.

    ``diameter``: a number of pixels (given by the user), ``"none"`` (the
    image's own scale), or None / ``"auto"``: the pixel size when given (or,
    for a model that knows its own, recorded in the file at ``path``), else
    estimated (:func:`estimate_diameter`). A model without a recorded scale
    always segments at the image's own scale.
    """
    sc = bundle.config.scale
    if diameter not in (None, "auto", "none"):
        return zoom_for(sc, diameter=float(diameter)), f"diameter {float(diameter):g} px (given)"
    if pixel_size is not None:
        return zoom_for(sc, pixel_size=pixel_size), f"pixel size {pixel_size:g} µm (given)"
    if diameter == "none" or not sc.diameter:
        return 1.0, "the image's own scale"
    px = pixel_size_of(path) if sc.pixel_size and path is not None else None
    if px:
        return zoom_for(sc, pixel_size=px), f"pixel size {px:.3g} µm (from the file)"
    est = estimate_diameter(bundle, plane, device=device)
    if est.diameter is None:
        return 1.0, f"no {sc.reference} found to measure: the image's own scale"
    return est.zoom, f"{sc.reference} diameter {est.diameter:.1f} px (estimated)"


def zoom_from_mask(bundle, mask: np.ndarray) -> float:
    """The zoom that brings the objects of a mask of the model's reference class to its scale.

    For a user's corrected masks (fine-tuning): 1.0 when the model records no
    scale or the mask holds no object.
    """
    sc = bundle.config.scale
    if not sc.diameter:
        return 1.0
    d = object_diameters(mask)
    if d.size == 0:
        return 1.0
    return float(np.clip(sc.diameter / np.median(d), *ZOOM_LIMITS))


# ---------------------------------------------------------------- estimation


@dataclass(frozen=True)
class ScaleEstimate:
    """What :func:`estimate_diameter` found."""

    diameter: float | None
    """Median object diameter (px) in the image, None when nothing was found."""
    zoom: float
    """Zoom to apply (1.0 when nothing was found)."""
    method: str
    objects: int = 0
    """Objects measured (``objects``), or candidate zooms tried (``confidence``)."""


def _crop_for_estimate(plane: np.ndarray, max_side: int) -> np.ndarray:
    h, w = plane.shape[:2]
    if max(h, w) <= max_side:
        return plane
    y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    return plane[y0 : y0 + max_side, x0 : x0 + max_side]


def estimate_diameter(
    bundle,
    plane: np.ndarray,
    *,
    method: str | None = None,
    device: str = "cpu",
    max_side: int = 2048,
    iterations: int = 2,
) -> ScaleEstimate:
    """Estimate the median diameter of the reference class's objects in ``plane``.

    Parameters
    ----------
    bundle
        A model whose :class:`~bundle_config.ScaleSpec` has a ``diameter`` and ``reference``.
    plane
        The image (gray or RGB, any dtype).
    method
        ``objects``, ``all-objects``, ``coarse`` or ``confidence`` (module docstring);
        None: the model's own (``scale.estimator``, chosen on its validation images).
    max_side
        Estimate on the central crop of at most this side (cost bound).
    iterations
        ``objects``: passes (the second one at the first pass's zoom).

    Returns
    -------
    ScaleEstimate
        With ``zoom`` 1.0 and ``diameter`` None when the model records no scale or
        no object of the reference class is found.
    """
    from .segment import segment
    from .tiling import run_to_end

    sc = bundle.config.scale
    method = method or sc.estimator
    if method not in ESTIMATORS:
        raise ValueError(f"unknown scale estimator {method!r}; use {' or '.join(ESTIMATORS)}")
    if not sc.diameter or not sc.reference:
        return ScaleEstimate(None, 1.0, method)
    crop = _crop_for_estimate(plane, max_side)
    lo, hi = ZOOM_LIMITS
    if method in ("objects", "all-objects", "coarse"):
        # the reference class alone, or every counted class the model knows the size of
        # (each gives a zoom, their geometric mean weighted by object counts is taken)
        classes = [sc.reference]
        if method == "all-objects":
            classes += [c for c in sc.diameters if c != sc.reference]
        zoom, d, n = (0.5, None, 0) if method == "coarse" else (1.0, None, 0)
        passes = max(1, iterations) + (1 if method == "coarse" else 0)
        for _ in range(passes):
            seg = run_to_end(segment(bundle, crop, device=device, zoom=zoom, tta=1))
            logs, weights = [], []
            for c in classes:
                # instances on the image's grid: diameters in image pixels whatever the zoom
                diam = object_diameters(seg.instances(c))
                trained = sc.diameter if c == sc.reference else sc.diameters[c]
                if diam.size:
                    logs.append(np.log(trained / np.median(diam)))
                    weights.append(diam.size)
                    if c == sc.reference:
                        n = int(diam.size)
            if not logs:
                break
            # the model draws objects sc.bias times too large: its own are taken at that
            new = float(np.clip(np.exp(np.average(logs, weights=weights)) * sc.bias, lo, hi))
            d = float(sc.diameter / new)
            done = abs(np.log(new / zoom)) < np.log(1.1)  # within 10 %: done
            zoom = new
            if done:
                break
        if d is None:
            return ScaleEstimate(None, 1.0, method)
        return ScaleEstimate(d, zoom, method, n)
    # confidence: the zoom at which the model is most certain of its foreground
    k = [c.name for c in bundle.config.classes].index(sc.reference)
    side = min(max_side, 1024)
    crop = _crop_for_estimate(plane, side)
    best, best_zoom = -np.inf, 1.0
    zooms = [0.5, 0.71, 1.0, 1.41, 2.0]
    for z in zooms:
        seg = run_to_end(segment(bundle, crop, device=device, zoom=z, tta=1))  # a quick look
        p = seg.probability(k)
        fg = p > 0.5
        if not fg.any():
            continue
        score = float(np.abs(p - 0.5)[ndi.binary_dilation(fg, iterations=2)].mean())
        if score > best:
            best, best_zoom = score, z
    if not np.isfinite(best):
        return ScaleEstimate(None, 1.0, method)
    return ScaleEstimate(float(sc.diameter / best_zoom), best_zoom, method, len(zooms))
