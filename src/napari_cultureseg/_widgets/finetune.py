"""The Fine-tune dock widget: learn from the user's corrections while they keep working.

The corrections of the open images (their workspaces) become training
samples on the GUI thread; :func:`core.versions.fine_tune_job` runs in a
``thread_worker`` with one CPU core left to the GUI. Every batch updates the
progress bar, the ETA and the loss / validation-Dice plot; every N steps the
visible region's prediction is refreshed in a preview layer. Stop ends the
run after the current batch and keeps the best weights so far as the new
version. At the end the new version (with its Dice beside its parent's on
held-out corrected pixels) is selected in the Segment widget; any earlier
version is one click away.
"""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info

from ..core.bundles import DEFAULT_MODEL, list_bundles, load_bundle
from ..core.model_input import to_model_input
from ..core.training import TrainConfig
from ..core.versions import JobResult, fine_tune_job, finetune_config, saved_sample, versions_of
from ..core.workspace_files import list_workspaces
from ._plot import LinePlot
from .segment import _row

CLASS_COLOURS = ["#39ff14", "#ff3b30", "#30b0ff", "#ffd040", "#ff00ff", "#00ffff"]


class FinetuneWidget(Container):
    """Dock widget: fine-tune a model on the corrections of the open images."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        models = list(list_bundles())
        self.model = ComboBox(
            label="start from",
            choices=lambda _: list(list_bundles()),
            value=DEFAULT_MODEL if DEFAULT_MODEL in models else (models[0] if models else None),
        )
        recipe = finetune_config()  # the defaults live in the fine-tuning recipe
        self.steps = SpinBox(label="steps", min=10, max=20000, step=10, value=300)
        self.lr = FloatSpinBox(
            label="learning rate", min=1e-6, max=1e-2, step=1e-5, value=recipe.lr
        )
        self.batch = SpinBox(label="batch size", min=1, max=64, value=recipe.batch_size)
        self.patch = SpinBox(label="patch size", min=64, max=1024, step=32, value=recipe.patch_size)
        self.preview_every = SpinBox(
            label="preview every (steps, 0 = off)", min=0, max=10000, value=50
        )
        self.sources = Label(label="learn from", value="")
        self.saved = Select(label="and saved workspaces", choices=self._saved_choices)
        self.saved.native.setMaximumHeight(56)
        self.start_button = PushButton(text="Fine-tune")
        self.stop_button = PushButton(
            text="Stop", enabled=False, tooltip="End after this batch and keep the best weights"
        )
        self.progress = ProgressBar(label="progress", min=0, max=100, value=0)
        self.eta = Label(label="", value="")
        self.result_label = Label(label="result", value="")
        self.versions = ComboBox(
            label="versions", choices=lambda _: versions_of(self.model.value or "")
        )
        self.use_button = PushButton(text="Use this version for Segment")
        from ._jobs import collapsible

        self.settings, section = collapsible(
            "training settings", [self.lr, self.batch, self.patch, self.preview_every]
        )
        self.extend(
            [
                self.model,
                self.steps,
                self.sources,
                self.saved,
                _row(self.start_button, self.stop_button),
                self.progress,
                self.eta,
                self.result_label,
                self.versions,
                self.use_button,
            ]
        )
        self.plot = LinePlot("loss (log) and validation Dice")
        # native widgets by position: the plot under the progress, the settings under steps
        layout = self.native.layout()
        layout.insertWidget(list(self).index(self.eta) + 1, self.plot)
        layout.insertWidget(list(self).index(self.steps) + 1, section)
        for label in (self.sources, self.eta, self.result_label):
            label.native.setWordWrap(True)
        self.native.setMaximumWidth(480)
        self.worker = None
        self.last: JobResult | None = None
        self._t0 = 0.0
        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.use_button.changed.connect(self.use_version)
        self.model.changed.connect(lambda _: self.versions.reset_choices())
        self.viewer.layers.events.inserted.connect(lambda _e: self.describe_sources())
        from ._session import session_for

        self.session = session = session_for(self.viewer)
        session.attach(self)
        session.listeners.append(self._sources_changed)  # corrections saved: show them
        self.describe_sources()

    # ----------------------------------------------------------- data
    def segment_widget(self):
        """The Segment widget of this viewer (or None): its last zoom, and the model it uses."""
        from .segment import SegmentWidget

        for widget in self.viewer.window.dock_widgets.values():
            inner = getattr(widget, "_magic_widget", None) or widget
            for w in (widget, inner):
                if isinstance(w, SegmentWidget):
                    return w
        return None

    def corrections(self):
        """The workspaces of the open images (the viewer's session, with or without the
        Segment dock), their latest edits handed over first."""
        from ._session import session_for

        opened = session_for(self.viewer).open()  # the same session as at __init__
        for corr in opened:
            corr.sync()
        return opened

    def _saved_choices(self, _widget=None) -> list[tuple[str, str]]:
        """Saved workspaces of images that are not open, with reviewed pixels: (label, key)."""
        open_keys = {c.ws.key for c in self.corrections()}
        out = []
        for w in list_workspaces():
            px = sum((w.reviewed or {}).values())
            if w.error or not w.image_path or not px or w.key in open_keys:
                continue
            out.append((f"{w.image_name} ({px} px reviewed, {w.modified[:16]})", w.key))
        return out

    def _sources_changed(self) -> None:
        if self.worker is None:  # while training, the list shows what the run learns from
            self.describe_sources()

    def describe_sources(self):
        rows = [
            f"{c.image_name}: " + ", ".join(f"{k} {v} px" for k, v in c.reviewed_pixels().items())
            for c in self.corrections()
        ]
        self.sources.value = (
            "\n".join(rows) or "no reviewed corrections yet (segment, then paint or accept a view)"
        )
        self.saved.reset_choices()

    def samples(self, bundle):
        """Training samples of the open images' corrections (read on the GUI thread)."""
        from ._segment_job import current_plane

        out = []
        for corr in self.corrections():
            layer = self.viewer.layers[corr.image_name]
            plane, index = current_plane(self.viewer, layer)
            if index != corr.index or plane.shape[:2] != corr.ws.shape:
                continue  # another plane is on screen: its corrections live in another workspace
            x = to_model_input(plane, bundle.config.input)
            out.append(corr.ws.samples(x, classes=bundle.config.classes))
        for key in self.saved.value or ():
            out.append(saved_sample(key, bundle.config.input, bundle.config.classes))
        return out

    # ----------------------------------------------------------- running
    def config(self) -> TrainConfig:
        return finetune_config(  # all cores but one: one stays with the GUI
            steps=int(self.steps.value),
            lr=float(self.lr.value),
            batch_size=int(self.batch.value),
            patch_size=int(self.patch.value),
            val_every=max(10, int(self.steps.value) // 10),
        )

    def start(self):
        if self.worker is not None:
            return
        try:
            name = self.model.value
            if not name:
                raise ValueError("no model to start from")
            bundle = load_bundle(name)
            bundle.network("cpu")  # native imports on the GUI thread (_segment_job.prepare_model)
            samples = self.samples(bundle)
            if not samples:
                raise ValueError(
                    "no corrections in the open images or the chosen saved workspaces: "
                    "segment an image, then paint corrections or press 'Accept this "
                    "view' in the Segment widget"
                )
            preview, every = self._preview(bundle), int(self.preview_every.value)
        except (ValueError, OSError) as exc:
            self._error(exc)
            return
        config = self.config()
        self.plot.series.clear()
        self.plot.add_series("loss", "#e0e0e0")
        for i, c in enumerate(bundle.config.classes):
            self.plot.add_series(
                f"{c.name} Dice", c.colour or CLASS_COLOURS[i % 6], unit_range=True
            )
        self.plot.update()
        self.progress.value, self.eta.value = 0, "starting…"
        self.start_button.enabled, self.stop_button.enabled = False, True
        self._t0 = time.perf_counter()
        self._stopped = False
        from ._jobs import start_job

        self.worker = start_job(
            fine_tune_job,
            bundle,
            name,
            samples,
            config,
            preview=preview,
            preview_every=every if preview else 0,
            # the splitting the user set for the parent in the Segment dock: the new version's own
            splitting=self.session.splitting.get(name),
            yielded=self._on_report,
            returned=self._on_done,
            errored=self._error,
            finished=self._on_finished,
        )

    def _preview(self, bundle):
        """A function predicting the visible region with the network being trained."""
        seg = self.segment_widget()
        layer = seg.image.value if seg is not None else None
        if layer is None:
            return None
        from ._segment_job import current_plane
        from ._view import visible_box

        plane, _ = current_plane(self.viewer, layer)
        y0, x0, y1, x1 = visible_box(layer, plane.shape)
        if (y1 - y0) * (x1 - x0) > 2048 * 2048:  # preview only a view that is cheap to predict
            return None
        # at the zoom the Segment widget used on this image: the objects the model expects
        last = getattr(seg, "result", None)
        zoom = (
            last.zoom
            if last is not None and seg._result_for and seg._result_for[0] == layer.name
            else 1.0
        )
        x = to_model_input(plane[y0:y1, x0:x1], bundle.config.input, zoom=zoom)
        shape = (int(y1 - y0), int(x1 - x0))
        self._preview_at = (layer.name, int(y0), int(x0), len(bundle.config.classes))

        def predict(net):
            import torch

            from ..core.device import to_device
            from ..core.nets import output_stride
            from ..core.segment import predict as predict_input
            from ..core.tiling import run_to_end

            device = next(net.parameters()).device  # the network's device, GPU or not

            def p(batch):
                with torch.inference_mode():
                    return torch.sigmoid(net(to_device(batch, device))).cpu().numpy()

            cfg = bundle.config
            stride = output_stride(cfg.architecture, cfg.params)
            t = min(cfg.tile, -(-max(x.shape[1:]) // stride) * stride)  # no bigger than the view
            return run_to_end(predict_input(x, p, cfg, tile=t, out_shape=shape))[0]

        return predict

    def stop(self):
        """End the run after the current batch; the best weights so far become the new version."""
        if self.worker is not None:
            self._stopped = True
            self.worker.send("stop")
            self.eta.value = "stopping after this batch…"

    def _on_report(self, r):
        self.progress.value = int(100 * r.fraction)
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / max(r.fraction, 1e-6) - elapsed
        self.eta.value = f"step {r.step}/{r.total_steps}, loss {r.loss:.4f}, ETA {eta:.0f} s"
        self.plot.append("loss", r.step, r.loss)
        for cls, d in (r.val_dice or {}).items():
            self.plot.append(f"{cls} Dice", r.step, d)
        if getattr(r, "preview", None) is not None:
            self._show_preview(r.preview)

    def _show_preview(self, probs):
        name, y0, x0, k = self._preview_at
        if name not in self.viewer.layers:
            return
        image = self.viewer.layers[name]
        lname = f"{name} · preview (training)"
        data = probs[:k].max(axis=0)  # the classes, not their border channels
        if lname in self.viewer.layers:
            self.viewer.layers[lname].data = data
        else:
            self.viewer.add_image(
                data,
                name=lname,
                colormap="magma",
                contrast_limits=(0, 1),
                opacity=0.5,
                blending="additive",
                scale=image.scale[-2:],
                translate=np.asarray(image.translate[-2:])
                + np.asarray([y0, x0]) * image.scale[-2:],
            )

    def _on_done(self, result: JobResult):
        self.last = result
        parts = []
        for cls, d in result.dice.items():
            p = result.parent_dice.get(cls)
            parts.append(f"{cls} Dice {d:.3f}" + (f" (parent {p:.3f})" if p is not None else ""))
        scores = ", ".join(parts) + (
            f" — {result.steps} steps, {result.seconds:.0f} s, on held-out corrected pixels"
        )
        if result.path is None:  # no better than its parent: nothing saved, nothing selected
            self.result_label.value = (
                f"No new version: after fine-tuning, {result.parent} was not beaten on the "
                f"held-out corrected pixels ({scores}). {result.parent} stays selected; "
                "correct more of the image, or train longer."
            )
            show_info(f"Fine-tuning did not beat {result.parent}; no new version was saved.")
            return
        if result.splitting:  # the levels the saved version keeps (sent at Start)
            scores += "; keeps your splitting " + ", ".join(
                f"{c} {v:g}" for c, v in result.splitting.items()
            )
        self.result_label.value = f"{result.name}: {scores}"
        self.versions.reset_choices()
        self.versions.value = result.name
        self.use_version()
        show_info(f"New model version {result.name} saved and selected for Segment.")

    def use_version(self):
        """Select the chosen version in the Segment widget (the way back to any version)."""
        name = self.versions.value
        seg = self.segment_widget()
        if not name or seg is None:
            return
        seg.model.reset_choices()
        seg.model.value = name
        seg.status.value = f"model {name} selected"

    def _error(self, exc):
        self.eta.value = f"error: {exc}"
        show_error(f"Fine-tune: {exc}")

    def _on_finished(self):
        self.worker = None
        self.start_button.enabled, self.stop_button.enabled = True, False
        self.describe_sources()
