"""The Segment dock's run (:mod:`.segment`): the frozen :class:`SegmentRequest` read on
the GUI thread, the plane on screen, the model prepared on the GUI thread, and the
generator the worker thread runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image

from ..core.bundles import load_bundle
from ..core.device import resolve_device
from ..core.images import as_plane
from ..core.segment import segment


@dataclass(frozen=True)
class SegmentRequest:
    """Everything a segmentation run needs, read on the GUI thread."""

    image_name: str
    model: str
    device: str
    tile: int
    overlap: float
    fit_tile: bool = True
    """Grow the tile (up to 25 %) when that covers the plane with fewer pixels."""
    box: tuple[int, int, int, int] | None = None
    """Only this region (y0, x0, y1, x1) of the plane, or the whole plane."""
    diameter: float | None = None
    """Object diameter in the image (px); None: estimated (auto), or the pixel size."""
    pixel_size: float | None = None
    """The image's pixel size (µm), for models that know their own."""
    tta: int | None = None  # None: the model's own
    """Test-time augmentation copies (1, 2, 4, 8)."""
    path: str | None = None
    """The image's file, whose metadata may hold its pixel size."""
    runtime: str = "auto"
    """``auto``, ``torch`` or ``onnx`` (ONNX Runtime on the CPU, :mod:`core.runtimes`)."""


def current_plane(viewer, layer: Image) -> tuple[np.ndarray, tuple[int, ...]]:
    """The 2-D plane of ``layer`` shown in the viewer, and its index in the layer's stack."""
    data = layer.data[0] if layer.multiscale else layer.data
    lead = data.ndim - (3 if layer.rgb else 2)
    if lead <= 0:
        return as_plane(data, source=layer.name), ()
    point = layer.world_to_data(viewer.dims.point)
    index = tuple(
        int(np.clip(round(p), 0, n - 1))
        for p, n in zip(point[:lead], data.shape[:lead], strict=True)
    )
    return as_plane(np.asarray(data[index]), source=layer.name), index


def prepare_model(model: str, device: str = "auto", runtime: str = "auto"):
    """Load the bundle and build its network, on the GUI thread.

    torch, torchvision and smp load native libraries on first import; doing
    that from a worker thread crashes some builds (seen with torch 2.14's
    triton), so the import and the one-off network build happen here. Both
    are cached: later runs with the same model cost nothing.
    """
    bundle = load_bundle(model)
    bundle.network(resolve_device(device))
    if runtime in ("auto", "onnx"):  # its native library too; the export: the worker
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            pass  # segment() falls back to torch and says so
    return bundle


def run_segmentation(request: SegmentRequest, plane: np.ndarray):
    """The job the worker runs: segment (a region of) the plane with the prepared model.

    The object size is estimated first (when asked for), then the plane is
    segmented at the zoom that gives its objects the model's training size;
    the returned :class:`Segmentation` carries the zoom and how it was chosen.
    """
    from dataclasses import replace

    from ..core.scale import choose_zoom

    bundle = load_bundle(request.model)
    if request.box is not None:
        y0, x0, y1, x1 = request.box
        plane = plane[y0:y1, x0:x1]
    zoom, how = choose_zoom(
        bundle,
        plane,
        diameter=request.diameter,
        pixel_size=request.pixel_size,
        path=request.path,
        device=request.device,
    )
    result = yield from segment(
        bundle,
        plane,
        device=request.device,
        tile=request.tile,
        overlap=request.overlap,
        fit=request.fit_tile,
        zoom=zoom,
        tta=request.tta,
        runtime=request.runtime,
    )
    return replace(result, note=how)
