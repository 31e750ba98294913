"""The Segment dock widget: image + model → one Labels layer per class, overlapping.

Values are read from the widgets on the GUI thread into a frozen
:class:`SegmentRequest`; the core generator runs in a ``thread_worker``;
layers change only in handlers on the GUI thread. Class layers are bound to
the image's workspace (:mod:`._corrections`): hand corrections are saved
within ~1.5 s and never overwritten by a later segmentation or threshold.

What a run does off the GUI thread is in :mod:`._segment_job`; the layers a result
makes (class masks, probabilities, object counts, threshold sliders) in
:mod:`._segment_layers`. This module stays a little over 400 lines because the dock's
widgets and their wiring (``__init__``) are one piece of about 150 lines.
"""

from __future__ import annotations

import os

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from ..core.bundles import DEFAULT_MODEL, find_bundle, list_bundles, load_bundle
from ..core.device import available_devices
from ..core.images import ImageError
from ..core.segmentation import Segmentation
from ._corrections import Corrections, workspace_key
from ._jobs import TTA_CHOICES
from ._segment_job import SegmentRequest, current_plane, prepare_model, run_segmentation
from ._segment_layers import AUTO_COUNT_PIXELS, ResultLayers
from ._view import visible_box

VIEW_MARGIN = 64
"""Context (pixels) added around the visible region when only the view is segmented."""


def _row(*widgets):
    """Widgets side by side in one row (buttons that belong together)."""
    from magicgui.widgets import Container

    row = Container(widgets=list(widgets), layout="horizontal", labels=False)
    row.margins = (0, 0, 0, 0)
    return row


class SegmentWidget(ResultLayers, Container):
    """Dock widget: choose image and model, press Segment, get one Labels layer per class."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="image")
        models = list(list_bundles())
        self.model = ComboBox(
            label="model",
            choices=lambda _: list(list_bundles()),  # refreshed by reset_choices()
            value=DEFAULT_MODEL if DEFAULT_MODEL in models else (models[0] if models else None),
        )
        self.device = ComboBox(
            label="device", choices=lambda _: ["auto", *available_devices()], value="auto"
        )
        self.runtime = ComboBox(
            label="runtime",
            choices=[
                ("auto (ONNX Runtime on a CPU)", "auto"),
                ("torch", "torch"),
                ("ONNX Runtime (CPU)", "onnx"),
            ],
            value="auto",
            tooltip="ONNX Runtime runs the network about twice as fast on a CPU, with the "
            "same masks. A model's first run exports it once; later runs reuse the export.",
        )
        self.tile = SpinBox(label="tile size", min=64, max=4096, step=32, value=512)
        self.overlap = FloatSpinBox(label="tile overlap", min=0.0, max=0.75, step=0.05, value=0.25)
        self.fit_tile = CheckBox(
            text="grow tiles to fit the image (fewer tiles, faster)",
            value=True,
            tooltip="Tiles up to 25 % larger, same overlap in pixels: a 1024² "
            "image takes 4 tiles of 576² instead of 9 of 512².",
        )
        self.diameter = FloatSpinBox(
            label="object diameter (px)",
            min=0.0,
            max=2000.0,
            step=0.5,
            value=0.0,
            tooltip="Diameter of the model's reference objects in this image (nuclei, cells), "
            "in pixels. 0 = auto: measured by a first pass of the model. The image is "
            "resampled so its objects have the size the model learnt; the masks come "
            "back on the image's own pixels.",
        )
        self.pixel_size = FloatSpinBox(
            label="pixel size (µm, 0 = unknown)",
            min=0.0,
            max=100.0,
            step=0.01,
            value=0.0,
            tooltip="Used instead of the diameter for models that know the pixel size they "
            "were trained at; leave 0 otherwise.",
        )
        self.tta = ComboBox(
            label="test-time augmentation",
            choices=TTA_CHOICES,
            value=1,
            tooltip="Average the predictions of flipped and rotated copies: smoother masks, "
            "as many times slower. Set to the model's own when a model is chosen (off, "
            "except where its validation images chose more copies).",
        )
        self.view_only = CheckBox(
            text="only the visible region (fast on large images)", value=False
        )
        self.show_prob = CheckBox(text="add probability layers", value=False)
        self.run_button = PushButton(text="Segment")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.status = Label(label="", value="")
        self.thresholds = Container(label="thresholds", labels=True)
        self._sliders: dict[str, FloatSlider] = {}
        self._splitting: dict[str, FloatSlider] = {}  # per distance-separated class
        self.accept_button = PushButton(
            text="Accept this view", tooltip="Mark the visible region reviewed: correct as it is"
        )
        self.count_button = PushButton(
            text="Count objects", tooltip="Label the objects of the corrected masks, per class"
        )
        from ._jobs import collapsible

        self.advanced, section = collapsible(
            "more settings",
            [
                self.device,
                self.runtime,
                self.pixel_size,
                self.tta,
                self.tile,
                self.overlap,
                self.fit_tile,
                self.show_prob,
            ],
        )
        self.extend(
            [
                self.image,
                self.model,
                self.diameter,
                self.view_only,
                _row(self.run_button, self.stop_button),
                self.progress,
                self.status,
                self.thresholds,
                _row(self.accept_button, self.count_button),
            ]
        )
        # the settings most users never change, folded under the object size
        self.native.layout().insertWidget(list(self).index(self.view_only) + 1, section)
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(480)  # leave the canvas most of the window
        self.worker = None
        self._finished_run = True
        self.result: Segmentation | None = None
        self._result_for: tuple | None = None  # (image name, plane index, box) of self.result
        self._result_model: str | None = None  # the model of self.result
        from ._session import session_for

        self.session = session_for(napari_viewer)
        """The viewer's open workspaces, autosaved, shared with the Fine-tune dock."""
        self.corrections: dict[str, Corrections] = self.session.corrections
        self.model.changed.connect(self._on_model_changed)
        self.image.changed.connect(self._restore_corrections)
        self.image.changed.connect(self._model_of_sample)
        self.viewer.layers.events.inserted.connect(
            lambda e: self._restore_corrections(e.value) if isinstance(e.value, Image) else None
        )
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.accept_button.changed.connect(self.accept_view)
        self.count_button.changed.connect(self.count_objects)
        self._on_model_changed(self.model.value)
        # autosave errors of the session, shown here (the session's timer does the saving)
        self._timer = QTimer(self.native)  # a child: stops and goes with the widget
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._show_session_errors)
        self._timer.start()
        self.session.attach(self)  # closing the dock saves; the last dock ends the session
        self._restore_corrections(self.image.value)
        # the chosen model's network is built once the dock is on screen, not at the first
        # press of Segment (benchmarks/widget_cold_start.py); a child timer dies with the dock
        self._warm_timer = QTimer(self.native)
        self._warm_timer.setSingleShot(True)
        self._warm_timer.timeout.connect(self._warm_up)
        self._warm_timer.start(0)

    # ----------------------------------------------------------- models and corrections
    def _warm_up(self):
        """Load the chosen model and build its network now, while the user picks an image,
        so that the first Segment starts at once. A model that cannot be loaded says so
        when it is chosen or run; here it is left alone."""
        if self.worker is not None or not self.model.value:
            return
        try:
            prepare_model(str(self.model.value), str(self.device.value), str(self.runtime.value))
        except Exception:  # noqa: S110 - reported where the user acts: choosing or running it
            pass

    def _on_model_changed(self, name):
        if not name:
            return
        if hasattr(self, "_warm_timer"):  # built later in __init__ than the first call
            self._warm_timer.start(0)
        try:
            cfg = load_bundle(name).config
        except Exception as exc:  # a broken user bundle must not break the widget
            self.status.value = f"model {name!r} cannot be loaded: {exc}"
            return
        self.tile.value, self.overlap.value = cfg.tile, cfg.overlap
        self.tta.value = cfg.tta
        trained = "" if cfg.lineage.get("steps") else " — UNTRAINED"
        scale = (
            f"; learnt {cfg.scale.reference}s of {cfg.scale.diameter:g} px"
            if cfg.scale.diameter
            else ""
        )
        self.diameter.enabled = bool(cfg.scale.diameter)
        self.pixel_size.enabled = bool(cfg.scale.pixel_size)
        names = ", ".join(  # abbreviated class names spelt out (S = single cells …)
            f"{c.name} = {c.description}" if len(c.name) <= 3 and c.description else c.name
            for c in cfg.classes
        )
        self.status.value = f"{cfg.name}: {names} ({cfg.modality}){trained}{scale}"

    def corrections_for(self, layer: Image, classes=()) -> Corrections:
        """The workspace of the plane of ``layer`` on screen (opened once, then reused)."""
        plane, index = current_plane(self.viewer, layer)
        return self.session.corrections_for(layer, plane, index, classes)

    def _model_of_sample(self, layer):
        """A sample image names the bundled model that fits it: select that model."""
        meta = getattr(layer, "metadata", None) or {}
        name = (meta.get("cultureseg") or {}).get("model") if isinstance(meta, dict) else None
        if name and name in list_bundles() and self.model.value != name:
            self.model.reset_choices()
            self.model.value = name

    def _restore_corrections(self, layer):
        """Opening an image that has saved corrections shows them again."""
        if layer is None:
            return
        from ..core.workspace_files import default_root

        try:
            plane, index = current_plane(self.viewer, layer)
            key = workspace_key(layer, plane, index)
            if key in self.corrections or not (default_root() / key / "workspace.json").is_file():
                return
            corr = self.corrections_for(layer)
            restored = corr.restore()
        except Exception as exc:  # a damaged workspace must not stop the user from working
            self.status.value = f"saved corrections could not be restored: {exc}"
            return
        n = sum(corr.reviewed_pixels().values())
        self.status.value = f"restored {', '.join(restored)} of {layer.name} ({n} reviewed pixels)"
        show_info(self.status.value)

    def autosave(self):
        """Save workspaces with changes now (the session's timer does it every 0.5 s)."""
        self.session.autosave()
        self._show_session_errors()

    def _show_session_errors(self):
        while self.session.errors:
            self._show_error(self.session.errors.pop(0))

    def accept_view(self):
        layer = self.image.value
        if layer is None:
            self._show_error(ImageError("no image layer to accept"))
            return
        corr = self.corrections_for(layer)
        n = corr.accept_view()
        corr.autosaver.flush()
        self.session.notify()
        self.status.value = (
            f"accepted the visible region of {layer.name}: {n} pixels newly reviewed"
        )

    # ----------------------------------------------------------- running
    def request(self) -> SegmentRequest:
        layer = self.image.value
        if layer is None:
            raise ImageError("no image layer: open an image (File ▸ Open) or a sample first")
        if not self.model.value:
            raise ValueError("no model installed; see `cultureseg models`")
        find_bundle(self.model.value)
        box = None
        if self.view_only.value:
            plane, _ = current_plane(self.viewer, layer)
            box = visible_box(layer, plane.shape, VIEW_MARGIN)
        source = getattr(getattr(layer, "source", None), "path", None)
        return SegmentRequest(
            layer.name,
            self.model.value,
            self.device.value,
            int(self.tile.value),
            float(self.overlap.value),
            bool(self.fit_tile.value),
            box,
            diameter=float(self.diameter.value) or None,
            pixel_size=float(self.pixel_size.value) or None,
            tta=int(self.tta.value),
            path=source,
            runtime=str(self.runtime.value),
        )

    def start(self):
        """Read the widgets, then segment in a worker thread (inline if CULTURESEG_NOTHREADS=1)."""
        if self.worker is not None:
            return
        try:
            req = self.request()
            plane, index = current_plane(self.viewer, self.image.value)
            prepare_model(req.model, req.device, req.runtime)
        except (ValueError, OSError) as exc:
            self._show_error(exc)
            return
        self.run_button.enabled, self.stop_button.enabled = False, True
        self.progress.value = 0
        where = "the visible region of " if req.box else ""
        self.status.value = f"segmenting {where}{req.image_name} with {req.model}…"
        self._finished_run = False
        on_result = lambda result: self._on_result(result, req, index)  # noqa: E731
        if os.environ.get("CULTURESEG_NOTHREADS") == "1":
            self._run_inline(run_segmentation(req, plane), on_result)
            return
        from ._jobs import start_job

        self.worker = start_job(
            run_segmentation,
            req,
            plane,
            yielded=self._on_progress,
            returned=on_result,
            errored=self._show_error,
            finished=self._on_finished,
        )

    def _run_inline(self, job, on_result):
        try:
            while True:
                self._on_progress(next(job))
        except StopIteration as stop:
            on_result(stop.value)
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
        note = getattr(p, "note", "")  # e.g. the GPU ran out of memory: smaller tiles
        self.status.value = f"tiles {p.done}/{p.total}" + (f" ({note})" if note else "")

    def _on_result(self, result: Segmentation, req: SegmentRequest, index: tuple[int, ...]):
        self._finished_run = True
        if req.image_name not in self.viewer.layers:
            self.status.value = f"{req.image_name} was closed; result dropped"
            return
        self.result, self._result_for = result, (req.image_name, index, req.box)
        self._result_model = req.model
        corr = self.corrections_for(self.viewer.layers[req.image_name], result.classes)
        self._build_thresholds(result)
        self._apply(corr, result, req.model, kind="segment")
        for d in result.derived:
            corr.set_derived(d.name, d.colour, d.base, d.minus)
        if self.show_prob.value:
            self._probability_layers(result, req)
        masks = {n: corr.ws.masks[n] for n in corr.ws.masks}
        counts = ", ".join(f"{n} {100 * m.mean():.1f}%" for n, m in masks.items())
        scale = f" Scale: {result.note}, zoom {result.zoom:.2f}." if result.note else ""
        head = f"done: {counts} of the image"
        self.progress.value = 100
        self._select_first_class(req.image_name, result)
        if np.prod(corr.ws.shape) <= AUTO_COUNT_PIXELS:  # larger: Count objects on request
            self.status.value = f"{head} (counting objects…).{scale}"
            self.count_objects(
                done=lambda text: setattr(self.status, "value", f"{head}; objects: {text}.{scale}")
            )
        else:
            self.status.value = f"{head}.{scale}"

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
