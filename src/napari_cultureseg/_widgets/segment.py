"""The Segment dock widget: image + model → one Labels layer per class, overlapping.

Values are read from the widgets on the GUI thread into a frozen
:class:`SegmentRequest`; the core generator runs in a ``thread_worker``;
layers change only in handlers on the GUI thread. Class layers are bound to
the image's workspace (:mod:`._corrections`): hand corrections are saved
within ~1.5 s and never overwritten by a later segmentation or threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
from ..core.device import available_devices, resolve_device
from ..core.images import ImageError, as_plane
from ..core.segment import Segmentation, segment
from ._corrections import Corrections, layer_name, workspace_key

VIEW_MARGIN = 64
"""Context (pixels) added around the visible region when only the view is segmented."""


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
    tta: int = 1
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


def _row(*widgets):
    """Widgets side by side in one row (buttons that belong together)."""
    from magicgui.widgets import Container

    row = Container(widgets=list(widgets), layout="horizontal", labels=False)
    row.margins = (0, 0, 0, 0)
    return row


AUTO_COUNT_PIXELS = 4096 * 4096
"""Objects are counted after every Segment up to this image size; larger: on request."""


class SegmentWidget(Container):
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
            choices=[("off", 1), ("2 flips", 2), ("4 flips", 4), ("8 flips and turns", 8)],
            value=1,
            tooltip="Average the predictions of flipped and rotated copies: smoother masks, "
            "as many times slower.",
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
            corners = np.asarray(layer.corner_pixels)[:, -2:]
            h, w = plane.shape[:2]
            y0, x0 = np.maximum(corners[0] - VIEW_MARGIN, 0)
            y1, x1 = np.minimum(corners[1] + 1 + VIEW_MARGIN, [h, w])
            box = (int(y0), int(x0), int(y1), int(x1))
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
        corr = self.corrections_for(self.viewer.layers[req.image_name], result.classes)
        self._build_thresholds(result)
        self._apply(corr, result, req.model, kind="segment")
        for d in result.derived:
            corr.set_derived(d.name, d.colour, d.base, d.minus)
        if self.show_prob.value:
            self._probability_layers(result, req)
        masks = {n: corr.ws.masks[n] for n in corr.ws.masks}
        counts = ", ".join(f"{n} {100 * m.mean():.1f}%" for n, m in masks.items())
        objects = self.count_objects() if np.prod(corr.ws.shape) <= AUTO_COUNT_PIXELS else ""
        scale = f" Scale: {result.note}, zoom {result.zoom:.2f}." if result.note else ""
        self.status.value = (
            f"done: {counts} of the image"
            + (f"; objects: {objects}" if objects else "")
            + "."
            + scale
        )
        self.progress.value = 100
        self._select_first_class(req.image_name, result)

    def _select_first_class(self, image_name: str, result: Segmentation) -> None:
        """Select the first class layer, so that the brush paints it (not an objects layer)."""
        name = layer_name(image_name, result.classes[0].name)
        if name in self.viewer.layers:
            self.viewer.layers.selection.active = self.viewer.layers[name]

    def count_objects(self, *_) -> str:
        """Label the objects of every counted class in its current (corrected) mask.

        Each goes to a hidden Labels layer ``<image> · <class> objects`` (one
        label per object, read-only: correct the class layer and count again).
        Touching objects are split as the model says (its border channel, or a
        watershed). Returns (and shows) the counts.
        """
        if self.result is None or self._result_for is None:
            return ""
        name, _index, box = self._result_for
        if name not in self.viewer.layers:
            return ""
        image = self.viewer.layers[name]
        corr = self.corrections_for(image)
        corr.sync()
        counts = []
        for spec in self.result.classes:
            if not spec.instances or spec.name not in corr.ws.masks:
                continue
            mask = corr.ws.masks[spec.name] > 0
            if box is None:
                labels = self.result.instances(spec.name, mask=mask)
            else:  # the model's view covers the box only: count there
                labels = np.zeros(mask.shape, np.uint32)
                labels[box[0] : box[2], box[1] : box[3]] = self.result.instances(
                    spec.name, mask=mask[box[0] : box[2], box[1] : box[3]]
                )
            lname = f"{layer_name(name, spec.name)} objects"
            if lname in self.viewer.layers:
                self.viewer.layers[lname].data = labels
            else:
                layer = self.viewer.add_labels(
                    labels,
                    name=lname,
                    visible=False,
                    opacity=0.6,
                    scale=image.scale[-2:],
                    translate=image.translate[-2:],
                )
                layer.editable = False
            counts.append(f"{spec.name} {int(labels.max())}")
        text = ", ".join(counts) or "no counted class"
        self.status.value = f"objects: {text}"
        return text

    def _apply(
        self,
        corr: Corrections,
        result: Segmentation,
        model: str | None,
        *,
        kind: str,
        only: str | None = None,
    ):
        box = self._result_for[2]
        for spec in result.classes:
            if only is not None and spec.name != only:
                continue
            t = self._sliders[spec.name].value if spec.name in self._sliders else spec.threshold
            mask = result.mask(spec.name, t)
            if box is not None:  # paste the region into the full plane
                full = np.zeros(corr.ws.shape, bool)
                full[box[0] : box[2], box[1] : box[3]] = mask
                mask = full
            corr.set_from_model(spec.name, spec.colour, mask, kind=kind, model=model, box=box)

    def _probability_layers(self, result: Segmentation, req: SegmentRequest):
        image = self.viewer.layers[req.image_name]
        off = (req.box[0], req.box[1]) if req.box else (0, 0)
        for k, spec in enumerate(result.classes):
            name = f"{layer_name(req.image_name, spec.name)} probability"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_image(
                result.probability(k),
                name=name,
                colormap="magma",
                contrast_limits=(0, 1),
                opacity=0.7,
                visible=False,
                scale=image.scale[-2:],
                translate=np.asarray(image.translate[-2:]) + np.asarray(off) * image.scale[-2:],
            )

    def _build_thresholds(self, result: Segmentation):
        """One live slider per class: re-thresholds the kept probabilities, no network run.

        A class keeps the threshold the user chose for it in an earlier run.
        """
        previous = {n: s.value for n, s in self._sliders.items()}
        self.thresholds.clear()
        self._sliders = {}
        for spec in result.classes:
            s = FloatSlider(
                label=spec.name,
                min=0.05,
                max=0.95,
                step=0.01,
                value=previous.get(spec.name, spec.threshold),
                tooltip=f"{spec.name}: {spec.description}" if spec.description else None,
            )
            s.changed.connect(lambda _v, n=spec.name: self.rethreshold(n))
            self.thresholds.append(s)
            self._sliders[spec.name] = s

    def rethreshold(self, cls: str):
        """Apply the slider's threshold to ``cls`` (unreviewed pixels only)."""
        if self.result is None or self._result_for is None:
            return
        name, index, _ = self._result_for
        if name not in self.viewer.layers:
            return
        corr = self.corrections_for(self.viewer.layers[name])
        self._apply(corr, self.result, None, kind="threshold", only=cls)
        corr.update_derived()

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
