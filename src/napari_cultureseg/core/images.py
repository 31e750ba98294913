"""Reading microscopy images: one 2-D plane per image, or an error that says what to do.

Everything a model sees goes through two steps:

1. :func:`read_image` (or :func:`as_plane` for an array already in memory)
   returns one 2-D plane, either ``(H, W)`` gray or ``(H, W, 3|4)`` colour, in
   its original dtype. Whatever cannot be such a plane raises
   :class:`ImageError` with a message that says what to do.
2. :func:`.model_input.to_model_input` converts that plane into the ``(C, H, W)``
   float32 array a model expects (:mod:`.model_input`: channel conversion, optional
   seed-004 preprocessing, percentile normalisation, resizing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MIN_SIDE = 8


class ImageError(ValueError):
    """An input that cannot be segmented as one 2-D image; the message says what to do."""


# ---------------------------------------------------------------- reading


def read_image(path: str | Path, *, plane: int | None = None) -> np.ndarray:
    """Read one 2-D image (gray or RGB/RGBA) from a TIFF, OME-TIFF, PNG or JPEG.

    Parameters
    ----------
    path
        The file.
    plane
        For a file holding several planes (multi-page TIFF, a time series or
        z-stack), the index of the plane to use. Required for such files: a
        stack is never silently reduced to its first page.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, 3|4)`` in the file's dtype.

    Raises
    ------
    ImageError
        The file is missing, corrupt, not an image, or not one 2-D plane.
    """
    return as_plane(read_array(path), plane=plane, source=str(path))


def read_array(path: str | Path) -> np.ndarray:
    """Read a file's pixels as stored (a stack stays a stack); errors as :class:`ImageError`."""
    path = Path(path)
    try:
        exists = path.is_file()
    except OSError as exc:  # e.g. a name or path too long for the file system
        raise ImageError(
            f"{str(path)[:80]}…: cannot be opened ({exc.strerror or exc}); "
            "shorten the file name or its folders' names"
        ) from exc
    if not exists:
        from . import omezarr

        if omezarr.is_image(path):  # an OME-Zarr image (a folder), e.g. a field of an HCS plate
            try:
                return omezarr.read_array(path)
            except (ValueError, OSError, KeyError) as exc:
                raise ImageError(f"{path.name}: could not be read as OME-Zarr ({exc})") from exc
        raise ImageError(f"{path}: no such file. Check the path.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ImageError(
            f"{path.name}: unsupported file type {suffix!r}; "
            f"save the image as one of {', '.join(SUFFIXES)}."
        )
    check_fits(path)
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data = series.asarray()
                axes = series.axes
            return _squeeze_axes(data, axes)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except ImageError:
        raise
    except Exception as exc:  # corrupt file, text renamed .tif, truncated PNG …
        raise ImageError(
            f"{path.name}: could not be read as an image ({type(exc).__name__}: {exc}). "
            "The file may be corrupt or not an image; re-export it from the acquisition software."
        ) from exc


WORKING_BYTES_PER_PIXEL = 48
"""What segmenting one pixel of a plane needs at the peak, roughly: the float32 input,
zoomed and normalised copies, the tiled probabilities and their weights, masks and labels."""


def release_memory() -> None:
    """Give freed heap memory back to the system, where the C library is glibc (Linux).

    glibc keeps blocks that numpy and torch freed for later use, so each stage of
    a whole-well mosaic (scale estimate, prediction, masks, objects) would start
    from what the one before left: on an 8000² mosaic the scale estimate left
    0.25 GB this way. ``malloc_trim`` returns it; elsewhere this does nothing.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def available_memory() -> int:
    """Bytes of memory available to this process now (Linux: MemAvailable), or a large guess."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def stored_shape(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of the pixels a file holds, from its header alone (None: unknown)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return tuple(series.shape), np.dtype(series.dtype)
        import imageio.v3 as iio

        props = iio.improps(path)
        return tuple(props.shape), np.dtype(props.dtype)
    except Exception:  # an unreadable header is reported by the read itself
        return None


def check_fits(path: Path) -> None:
    """Refuse, before reading, a file whose pixels and segmentation would not fit in memory.

    Raises
    ------
    ImageError
        With the size, the memory it would need and what to do instead.
    """
    found = stored_shape(path)
    if found is None:
        return
    shape, dtype = found
    pixels = int(np.prod(shape, dtype=np.float64))
    plane = int(np.prod([n for n in shape if n > 4][-2:], dtype=np.float64))
    need = pixels * dtype.itemsize + plane * WORKING_BYTES_PER_PIXEL
    have = available_memory()
    if need > have:
        raise ImageError(
            f"{path.name}: {' x '.join(map(str, shape))} pixels of {dtype} would need about "
            f"{need / 2**30:.1f} GiB to read and segment, and {have / 2**30:.1f} GiB are "
            "available. Crop it or downsample it first (e.g. in Fiji), or split a mosaic into "
            "fields; for a stack, save the plane you want on its own."
            + (
                f" A TIFF mosaic can be segmented block by block from disk: cultureseg segment "
                f"{path.name} --out masks/ --block 2048"
                if path.suffix.lower() in (".tif", ".tiff")
                else ""
            )
        )


def _squeeze_axes(data: np.ndarray, axes: str) -> np.ndarray:
    """Drop singleton axes, put a colour axis (OME ``S``, or ``C`` of size 3/4) last."""
    keep = [i for i, n in enumerate(data.shape) if n > 1 or axes[i] in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    for colour in ("S", "C"):
        i = axes.find(colour)
        if i >= 0 and data.shape[i] in (3, 4):
            return np.moveaxis(data, i, -1)
    return data


def channels_last(shape) -> bool:
    """Whether ``(H, W, C)`` is an image with C channels last (2, or 5-64), not a stack."""
    shape = tuple(shape)
    return (
        len(shape) == 3
        and (shape[-1] == 2 or 4 < shape[-1] <= 64)
        and shape[-1] * 4 <= min(shape[:2])
    )


def as_plane(data, *, plane: int | None = None, source: str = "image") -> np.ndarray:
    """Validate an array as one 2-D plane (gray or RGB/RGBA), choosing ``plane`` in a stack.

    A stack is an array with more than two spatial dimensions, e.g. ``(T, H, W)``
    or ``(Z, H, W, 3)``; ``plane`` indexes its first axis. Dask or zarr arrays
    are read only for the chosen plane.
    """
    shape = tuple(getattr(data, "shape", ()))
    ndim = len(shape)
    if ndim == 3 and channels_last(shape):
        # (H, W, C) with many channels (a spectral or multi-channel image saved
        # channels-last): its planes are the channels, not rows of a stack
        data = np.moveaxis(np.asarray(data), -1, 0)
        shape = tuple(data.shape)
    is_colour = ndim >= 3 and shape[-1] in (3, 4)
    spatial = ndim - 1 if is_colour else ndim
    if spatial > 3:
        raise ImageError(
            f"{source}: shape {shape} has {spatial - 2} stack axes; reduce it to one "
            "stack axis of 2-D planes first (e.g. data[t, z])."
        )
    if spatial > 2:
        if plane is None:
            raise ImageError(
                f"{source}: expected a 2-D image (gray or RGB), got shape {shape}, a stack of "
                f"{shape[0]} planes. Choose one plane (CLI: --plane K; napari: move the slider "
                "to the plane, it is the one segmented; Python: plane=K)."
            )
        if not -shape[0] <= plane < shape[0]:
            raise ImageError(f"{source}: plane {plane} does not exist; it has {shape[0]} planes.")
        data = data[plane]
        shape = tuple(data.shape)
    elif plane not in (None, 0):
        raise ImageError(f"{source}: is a single plane; plane={plane} does not exist.")
    data = np.asarray(data)
    if data.ndim not in (2, 3) or (data.ndim == 3 and not is_colour):
        raise ImageError(
            f"{source}: expected a 2-D image (H, W) or a colour image (H, W, 3|4), got shape "
            f"{shape}."
        )
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ImageError(f"{source}: pixels of type {data.dtype} are not an image's intensities.")
    if min(data.shape[:2]) < MIN_SIDE:
        raise ImageError(
            f"{source}: {data.shape[0]}×{data.shape[1]} pixels is too small to segment; "
            f"images need at least {MIN_SIDE} pixels a side."
        )
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).any():
        raise ImageError(f"{source}: every pixel is NaN or infinite; there is nothing to segment.")
    return data
