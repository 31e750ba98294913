"""Turning a plane :mod:`.images` read into model input: channel conversion, optional
seed-004 preprocessing (3×3 median, histogram matching), percentile normalisation
(:class:`Normalisation`, :class:`InputSpec`) and resizing to a zoom or tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .images import as_plane


@dataclass(frozen=True)
class Normalisation:
    """Percentile normalisation: ``low`` → 0, ``high`` → 1 (values outside are kept).

    With ``flatten`` (a length in network pixels) the image's slowly varying
    background, a Gaussian blur of that width, is subtracted first: uneven
    illumination, a bright corner or a vignette then no longer takes up the
    range the percentiles stretch, and a pale, low-contrast field comes out
    with the contrast of a well-lit one (see :func:`flatten_background`).
    """

    kind: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    flatten: float | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalisation:
        d = dict(d or {})
        if d.get("flatten") is not None:
            d["flatten"] = float(d["flatten"])
        return cls(**d)


# ---------------------------------------------------------------- model input


def _fits_float32(plane: np.ndarray) -> np.ndarray:
    """A float64 plane whose values would overflow float32, scaled by its largest magnitude
    (normalisation removes the scale anyway); anything else unchanged."""
    plane = np.asarray(plane)
    if plane.dtype.kind == "f" and plane.dtype.itemsize > 4:
        finite = plane[np.isfinite(plane)]
        top = float(np.abs(finite).max()) if finite.size else 0.0
        if top > 1e37:
            return plane / top
    return plane


def to_gray(plane: np.ndarray) -> np.ndarray:
    """Float32 luminance of an RGB(A) plane (alpha dropped); gray planes pass as float32."""
    plane = _fits_float32(plane)
    if plane.ndim == 2:
        return plane.astype(np.float32, copy=False)
    rgb = plane[..., :3].astype(np.float32)
    return rgb @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def to_channels(plane: np.ndarray, channels: int) -> np.ndarray:
    """Return ``(channels, H, W)`` float32: gray replicated, RGB kept or reduced to luminance."""
    if channels == 1:
        return to_gray(plane)[None]
    if channels == 3:
        plane = _fits_float32(plane)
        if plane.ndim == 2:
            g = plane.astype(np.float32, copy=False)
            return np.stack([g, g, g])
        return np.moveaxis(plane[..., :3].astype(np.float32), -1, 0)
    raise ValueError(f"models take 1 (gray) or 3 (RGB) input channels, not {channels}")


def fill_nonfinite(x: np.ndarray) -> np.ndarray:
    """Replace NaN/inf pixels by the median of the finite ones (in place on a float copy)."""
    bad = ~np.isfinite(x)
    if bad.any():
        x = np.array(x, dtype=np.float32)
        x[bad] = np.median(x[~bad]) if (~bad).any() else 0.0
    return x


def normalise(
    x: np.ndarray, norm: Normalisation = Normalisation(), levels: Sequence | None = None
) -> np.ndarray:
    """Percentile-normalise each channel of ``(C, H, W)`` so ``low``→0 and ``high``→1.

    ``levels``: each channel's ``(low, high)`` values, when they were measured on
    more than ``x`` (a whole-well mosaic normalised block by block takes the
    percentiles of the whole mosaic, :func:`levels_of`). A flat channel (no
    contrast) becomes all zeros rather than NaN.
    """
    if norm.kind == "none":
        return x.astype(np.float32, copy=False)
    if norm.kind != "percentile":
        raise ValueError(f"unknown normalisation {norm.kind!r}; use 'percentile' or 'none'")
    out = np.empty(x.shape, np.float32)
    for c in range(x.shape[0]):
        ch = x[c]
        if norm.flatten:
            ch = flatten_background(ch, norm.flatten)
        lo, hi = levels[c] if levels is not None else _percentiles(ch, norm)
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            out[c] = 0.0
        else:  # in float32 and in place: no float64 temporary the size of the image
            np.subtract(ch, np.float32(lo), out=out[c], dtype=np.float32)
            out[c] *= np.float32(1.0 / (hi - lo))
    return out


def _percentiles(ch: np.ndarray, norm: Normalisation) -> tuple[float, float]:
    # percentiles of a subsample: identical in effect, 20× faster on mosaics
    step = max(1, int(np.sqrt(ch.size / 1e6)))
    lo, hi = (float(v) for v in np.percentile(ch[::step, ::step], [norm.low, norm.high]))
    return lo, hi


def levels_of(samples: Sequence[np.ndarray], norm: Normalisation) -> list[tuple[float, float]]:
    """Each channel's ``(low, high)`` percentile values over ``samples``, ``(C, n)`` arrays of
    model-input values drawn from all over one image (see :func:`normalise`)."""
    pooled = np.concatenate([np.asarray(s, np.float32) for s in samples], axis=1)
    return [tuple(float(v) for v in np.percentile(ch, [norm.low, norm.high])) for ch in pooled]


def flatten_background(ch: np.ndarray, sigma: float) -> np.ndarray:
    """``ch`` minus its background: a Gaussian blur of width ``sigma`` pixels.

    The blur is computed on a copy shrunk so that ``sigma`` spans about 8 of its
    pixels and enlarged back bilinearly (the background is smooth at that
    scale), which costs a few milliseconds even on a mosaic. Edges are mirrored.
    """
    from scipy.ndimage import gaussian_filter, zoom

    ch = np.asarray(ch, np.float32)
    f = max(1, int(sigma // 8))
    h, w = ch.shape
    small = ch[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    if min(small.shape) < 2:
        return ch - float(ch.mean())
    bg = gaussian_filter(small, sigma / f, mode="mirror")
    bg = zoom(bg, (h / bg.shape[0], w / bg.shape[1]), order=1, mode="nearest", grid_mode=True)
    return ch - bg[:h, :w]


def median3(x: np.ndarray) -> np.ndarray:
    """3×3 median filter per channel (Aydın et al.'s (2022) denoising step)."""
    from scipy.ndimage import median_filter

    return np.stack([median_filter(c, size=3, mode="reflect") for c in x]).astype(np.float32)


def match_histogram(x: np.ndarray, reference_quantiles: np.ndarray) -> np.ndarray:
    """Map each channel's intensity quantiles onto ``reference_quantiles`` (Aydın et al. 2022).

    ``reference_quantiles`` is a 1-D array of intensities at evenly spaced
    quantiles (0…1) of the training data, stored in the bundle.
    """
    ref = np.asarray(reference_quantiles, np.float32)
    qs = np.linspace(0, 1, ref.size)
    out = np.empty(x.shape, np.float32)
    for c in range(x.shape[0]):
        src = np.quantile(x[c], qs)
        src = np.maximum.accumulate(src + np.arange(src.size) * 1e-9)  # strictly increasing
        out[c] = np.interp(x[c], src, ref)
    return out


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input; stored in a bundle's ``config.json`` under ``input``."""

    channels: int = 1
    normalisation: Normalisation = Normalisation()
    median3: bool = False
    histogram_reference: tuple[float, ...] | None = None
    resize_to: int | None = None
    """None (default): the model sees the image's own pixels, tile by tile. A size
    (Sadanandan et al. 2017: 480): the whole image is resized so its longer side has this many
    pixels (aspect ratio kept; a square image becomes ``resize_to``²), segmented in
    one pass, and the probabilities resized back (see :func:`fit_shape`). Applied by
    ``segment`` and ``fine_tune`` to whole images, not by :func:`to_model_input`,
    which keeps the image's pixel grid so that masks drawn on it still fit."""

    @classmethod
    def from_dict(cls, d: dict | None) -> InputSpec:
        d = dict(d or {})
        ref = d.get("histogram_reference")
        size = d.get("resize_to")
        return cls(
            channels=int(d.get("channels", 1)),
            normalisation=Normalisation.from_dict(d.get("normalisation")),
            median3=bool(d.get("median3", False)),
            histogram_reference=tuple(ref) if ref else None,
            resize_to=int(size) if size else None,
        )

    def to_dict(self) -> dict:
        return {
            "channels": self.channels,
            "normalisation": vars(self.normalisation).copy(),
            "median3": self.median3,
            "histogram_reference": list(self.histogram_reference)
            if self.histogram_reference
            else None,
            "resize_to": self.resize_to,
        }


def fit_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """The ``(h, w)`` an image of ``shape`` has once its longer side is ``size`` pixels.

    >>> fit_shape((1080, 1080), 480), fit_shape((1080, 1440), 480)
    ((480, 480), (360, 480))
    """
    h, w = int(shape[0]), int(shape[1])
    f = size / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def resize_planes(
    x: np.ndarray, shape: tuple[int, int], *, order: int = 1, anti_alias: bool = True
) -> np.ndarray:
    """Resize ``(C, H, W)`` to ``(C, *shape)`` float32, range preserved.

    Bilinear (``order`` 1) and area-averaging (anti-aliased) when shrinking, as
    Sadanandan et al. 2017 downsamples its images; ``order`` 0 is nearest neighbour.
    ``anti_alias`` False: plain bilinear also when shrinking (for masks).
    """
    from skimage.transform import resize

    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"expected (C, H, W), got shape {x.shape}")
    if tuple(x.shape[1:]) == tuple(shape):
        return x.astype(np.float32, copy=False)
    shrink = shape[0] < x.shape[1] or shape[1] < x.shape[2]
    out = resize(
        x.astype(np.float32, copy=False),
        (x.shape[0], *shape),
        order=order,
        anti_aliasing=bool(shrink and order > 0 and anti_alias),
        preserve_range=True,
    )
    return out.astype(np.float32, copy=False)


def bilinear_neighbours(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``size`` target pixels along an axis of ``n`` source pixels (pixel
    centres aligned, edges extended): the two source neighbours and the second's weight.

    Target pixel ``o`` samples the source at ``((2o + 1) n - size) / (2 size)``, worked out
    in integers: two grids with the same ratio ``n / size`` whose origins are whole pixels
    of both (a block of a mosaic and the whole mosaic, :mod:`.mosaic`) get bit-identical
    weights, which floating-point coordinates (``scipy.ndimage.zoom``) do not give.
    """
    num = (2 * np.arange(size, dtype=np.int64) + 1) * int(n) - int(size)
    den = 2 * int(size)
    num = np.clip(num, 0, (int(n) - 1) * den)
    i0 = num // den
    weight = ((num - i0 * den) / den).astype(np.float32)
    return i0, np.minimum(i0 + 1, int(n) - 1), weight


def resample_plane(p: np.ndarray, shape: tuple[int, int], *, rows: int = 256) -> np.ndarray:
    """Resample one ``(h, w)`` plane to ``shape``, float32, bilinear (as :func:`resize_planes`).

    Smoothed first when shrinking (skimage's anti-aliasing sigma); edges are
    extended, not mirrored. Coordinates are exact (:func:`bilinear_neighbours`), so a
    window of a plane cut on whole pixels of both grids resamples to exactly the
    window of the whole plane's result (away from the window's edges). Made for
    probabilities going back from the network's grid to a whole-well mosaic's: it works
    ``rows`` output rows at a time, so besides the output it allocates, when shrinking,
    one smoothed float32 copy of the input and a few bands of ``rows`` rows; integer
    planes are not converted to float first.
    """
    from scipy import ndimage as ndi

    p = np.asarray(p)
    shape = (int(shape[0]), int(shape[1]))
    if p.shape == shape:
        return p.astype(np.float32, copy=False)
    if p.dtype.kind not in "iub" and p.dtype != np.float32:  # float64, float16: to float32
        p = p.astype(np.float32)
    factors = (shape[0] / p.shape[0], shape[1] / p.shape[1])
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    if any(sigma):  # an integer plane goes straight into a float32 result
        p = ndi.gaussian_filter(p, sigma, mode="mirror", output=np.float32)
    y0, y1, wy = bilinear_neighbours(p.shape[0], shape[0])
    x0, x1, wx = bilinear_neighbours(p.shape[1], shape[1])
    out = np.empty(shape, np.float32)
    one = np.float32(1.0)
    for r in range(0, shape[0], rows):
        w = wy[r : r + rows, None]
        band = p[y0[r : r + rows]].astype(np.float32) * (one - w)
        band += p[y1[r : r + rows]].astype(np.float32) * w
        out[r : r + rows] = band[:, x0] * (one - wx) + band[:, x1] * wx
    return out


def zoomed_shape(shape: tuple[int, int], zoom: float) -> tuple[int, int]:
    """``(h, w)`` of an image of ``shape`` resampled by ``zoom`` (> 1 enlarges)."""
    return max(1, round(shape[0] * zoom)), max(1, round(shape[1] * zoom))


def prepared_input(plane: np.ndarray, spec: InputSpec = InputSpec(), *, zoom: float = 1.0):
    """A plane as ``(C, H, W)`` model input before normalisation: channels, the 3×3 median
    and the zoom (bilinear, area-averaged when shrinking), see :func:`to_model_input`."""
    plane = as_plane(plane)
    shape = zoomed_shape(plane.shape[:2], zoom)
    gray_int = plane.ndim == 2 and plane.dtype.kind in "iub" and spec.channels == 1
    if zoom != 1.0 and gray_int and not spec.median3:
        # a gray integer plane is resampled as it is: a mosaic's float32 copy at
        # full size, 4 B a pixel, is never made
        return resample_plane(plane, shape)[None]
    x = fill_nonfinite(to_channels(plane, spec.channels))
    if spec.median3:
        x = median3(x)
    if zoom != 1.0:
        x = np.stack([resample_plane(c, shape) for c in x])
    return x


def to_model_input(
    plane: np.ndarray,
    spec: InputSpec = InputSpec(),
    *,
    zoom: float = 1.0,
    levels: Sequence | None = None,
) -> np.ndarray:
    """Turn a 2-D plane into the ``(C, H, W)`` float32 array a model with ``spec`` expects.

    ``zoom`` resamples the image (bilinear, area-averaged when shrinking) after
    the channel conversion and the 3×3 median, before normalisation, so that
    its objects have the size the model learnt (:mod:`.scale`); the result then
    has :func:`zoomed_shape` pixels. ``levels``: the normalisation's per-channel
    ``(low, high)`` (default: the percentiles of this plane, :func:`normalise`).
    """
    x = normalise(prepared_input(plane, spec, zoom=zoom), spec.normalisation, levels)
    if spec.histogram_reference is not None:  # quantiles of normalised training images
        x = match_histogram(x, np.asarray(spec.histogram_reference))
    return x
