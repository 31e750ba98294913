"""npe2 reader: culture images (TIFF, OME-TIFF, PNG, JPEG) as napari image layers.

A multi-plane file opens as a stack; the plane on screen is the one the
Segment widget segments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.images import SUFFIXES, ImageError, channels_last, read_array


def get_reader(path):
    """Return a reader for one image file we understand, else None (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if Path(path).suffix.lower() not in SUFFIXES:
        return None
    return read_layers


def read_layers(path):
    """Read one image file into a napari layer-data tuple; unreadable files raise ImageError."""
    if isinstance(path, list):
        path = path[0]
    data = read_array(path)
    if data.ndim < 2 or min(data.shape[:2]) < 1:
        raise ImageError(f"{Path(path).name}: shape {data.shape} is not an image.")
    if data.dtype.kind not in "uifb":
        raise ImageError(
            f"{Path(path).name}: pixels of type {data.dtype} are not intensities; "
            "save the image as integers or floats."
        )
    if channels_last(data.shape):  # (H, W, C): one plane per channel, as the engine reads it
        data = np.moveaxis(data, -1, 0)
    rgb = data.ndim >= 3 and data.shape[-1] in (3, 4) and data.dtype.kind in "uif"
    meta = {"name": Path(path).stem, "rgb": rgb, "metadata": {"path": str(Path(path).resolve())}}
    return [(data, meta, "image")]
