"""The Segment dock widget: image + model → one Labels layer per class, overlapping.

Values are read from the widgets on the GUI thread into a frozen
:class:`SegmentRequest`; the core generator runs in a ``thread_worker``;
layers change only in the ``returned`` handler on the GUI thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox, create_widget
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info

from ..core.bundles import DEFAULT_MODEL, find_bundle, list_bundles, load_bundle
from ..core.images import ImageError, as_plane
from ..core.segment import Segmentation, segment


@dataclass(frozen=True)
class SegmentRequest:
    """Everything a segmentation run needs, read on the GUI thread."""

    image_name: str
    model: str
    device: str
    tile: int
    overlap: float


def class_colormap(colour: str) -> DirectLabelColormap:
    """Label 1 in the class colour, everything else transparent."""
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: colour})


def layer_name(image_name: str, class_name: str) -> str:
    return f"{image_name} · {class_name}"


def current_plane(viewer, layer: Image) -> tuple[np.ndarray, tuple[int, ...]]:
    """The 2-D plane of ``layer`` shown in the viewer, and its index in the layer's stack."""
    data = layer.data[0] if layer.multiscale else layer.data
    lead = data.ndim - (3 if layer.rgb else 2)
    if lead <= 0:
        return as_plane(data, source=layer.name), ()
    point = layer.world_to_data(viewer.dims.point)
    index = tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(point[:lead], data.shape[:lead], strict=True))
    return as_plane(np.asarray(data[index]), source=layer.name), index


def prepare_model(request: SegmentRequest):
    """Load the bundle and build its network, on the GUI thread.

    torch, torchvision and smp load native libraries on first import; doing
    that from a worker thread crashes some builds (seen with torch 2.14's
    triton), so the import and the one-off network build happen here. Both
    are cached: later runs with the same model cost nothing.
    """
    from ..core.models import resolve_device

    bundle = load_bundle(request.model)
    bundle.network(resolve_device(request.device))
    return bundle


class SegmentFailed(Exception):
    """An error inside the worker, re-raised as a non-RuntimeError.

    superqt treats a RuntimeError escaping a worker as "the worker was
    deleted" and never emits ``finished``; torch reports out-of-memory and
    most failures as RuntimeError, which would leave the widget busy forever.
    """


def run_segmentation(request: SegmentRequest, plane: np.ndarray):
    """The job the worker runs: segment with the prepared (cached) model."""
    bundle = load_bundle(request.model)
    try:
        return (
            yield from segment(
                bundle, plane, device=request.device, tile=request.tile, overlap=request.overlap
            )
        )
    except RuntimeError as exc:
        raise SegmentFailed(f"{type(exc).__name__}: {exc}") from exc


class SegmentWidget(Container):
    """Dock widget: choose image and model, press Segment, get one Labels layer per class."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="image")
        models = list(list_bundles())
        self.model = ComboBox(
            label="model",
            choices=models,
            value=DEFAULT_MODEL if DEFAULT_MODEL in models else (models[0] if models else None),
        )
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.tile = SpinBox(label="tile size", min=64, max=4096, step=32, value=512)
        self.overlap = FloatSpinBox(label="tile overlap", min=0.0, max=0.75, step=0.05, value=0.25)
        self.run_button = PushButton(text="Segment")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.status = Label(label="", value="")
        self.extend(
            [self.image, self.model, self.device, self.tile, self.overlap,
             self.run_button, self.stop_button, self.progress, self.status]
        )
        self.worker = None
        self._finished_run = True
        self.result: Segmentation | None = None
        self.model.changed.connect(self._on_model_changed)
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self._on_model_changed(self.model.value)

    # ----------------------------------------------------------- gui thread
    def _on_model_changed(self, name):
        if not name:
            return
        try:
            cfg = load_bundle(name).config
        except Exception as exc:  # a broken user bundle must not break the widget
            self.status.value = f"model {name!r} cannot be loaded: {exc}"
            return
        self.tile.value, self.overlap.value = cfg.tile, cfg.overlap
        self.status.value = f"{cfg.name}: {', '.join(cfg.class_names)} ({cfg.modality})"

    def request(self) -> SegmentRequest:
        layer = self.image.value
        if layer is None:
            raise ImageError("no image layer: open an image (File ▸ Open) or a sample first")
        if not self.model.value:
            raise ValueError("no model installed; see `cultureseg models`")
        find_bundle(self.model.value)
        return SegmentRequest(
            image_name=layer.name,
            model=self.model.value,
            device=self.device.value,
            tile=int(self.tile.value),
            overlap=float(self.overlap.value),
        )

    def start(self):
        """Read the widgets, then segment in a worker thread (or inline if CULTURESEG_NOTHREADS=1)."""
        if self.worker is not None:
            return
        try:
            req = self.request()
            plane, _ = current_plane(self.viewer, self.image.value)
            prepare_model(req)
        except (ValueError, OSError) as exc:
            self._show_error(exc)
            return
        self.run_button.enabled, self.stop_button.enabled = False, True
        self.progress.value = 0
        self.status.value = f"segmenting {req.image_name} with {req.model}…"
        self._finished_run = False
        if os.environ.get("CULTURESEG_NOTHREADS") == "1":
            self._run_inline(run_segmentation(req, plane), req)
            return
        from napari.qt.threading import create_worker

        # handlers passed at creation: without an `errored` handler there, napari
        # re-raises worker errors into the Qt event loop
        self.worker = create_worker(
            run_segmentation, req, plane,
            _start_thread=False,
            _connect={
                "yielded": self._on_progress,
                "returned": lambda result: self._on_result(result, req),
                "errored": self._show_error,
                "finished": self._on_finished,
            },
        )
        self.worker.start()

    def _run_inline(self, job, req):
        try:
            while True:
                self._on_progress(next(job))
        except StopIteration as stop:
            self._on_result(stop.value, req)
        except Exception as exc:
            self._show_error(exc)
        self._on_finished()

    def stop(self):
        """Stop segmenting after the current batch of tiles; layers stay as they were."""
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "stopping…"

    def _on_progress(self, p):
        self.progress.value = int(100 * p.fraction)
        self.status.value = f"tiles {p.done}/{p.total}"

    def _on_result(self, result: Segmentation, req: SegmentRequest):
        self.result = result
        self._finished_run = True
        image = self.viewer.layers[req.image_name] if req.image_name in self.viewer.layers else None
        masks = result.masks()
        for name, mask in masks.items():
            spec = result.spec(name)
            lname = layer_name(req.image_name, name)
            data = mask.astype(np.uint8)
            if lname in self.viewer.layers and isinstance(self.viewer.layers[lname], Labels) \
                    and self.viewer.layers[lname].data.shape == data.shape:
                self.viewer.layers[lname].data = data
            else:
                if lname in self.viewer.layers:
                    self.viewer.layers.remove(lname)
                kwargs = {}
                if image is not None:
                    kwargs = {"scale": image.scale[-2:], "translate": image.translate[-2:]}
                self.viewer.add_labels(
                    data, name=lname, colormap=class_colormap(spec.colour), opacity=0.6,
                    metadata={"cultureseg": {"class": name, "model": req.model, "image": req.image_name}},
                    **kwargs,
                )
        counts = ", ".join(f"{n} {100 * m.mean():.1f}%" for n, m in masks.items())
        self.status.value = f"done: {counts} of the image"
        self.progress.value = 100

    def _show_error(self, exc):
        self._finished_run = True
        self.status.value = f"error: {exc}"
        show_error(f"Segment: {exc}")

    def _on_finished(self):
        if not self._finished_run:
            self.status.value = "stopped; no layer was changed"
            show_info("Segment stopped; no layer was changed.")
        self.worker = None
        self.run_button.enabled, self.stop_button.enabled = True, False
