"""The layers a segmentation result makes in the viewer, for the Segment dock
(:mod:`.segment`): class masks through the image's workspace, probability images,
hidden object-count layers, one live threshold slider per class and one *splitting*
slider per class whose touching objects a distance map separates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator

import numpy as np
from magicgui.widgets import FloatSlider
from napari.utils.notifications import show_error

from ..core.segmentation import Segmentation
from ..core.tiling import run_to_end
from ._corrections import Corrections, layer_name
from ._segment_job import SegmentRequest

AUTO_COUNT_PIXELS = 4096 * 4096
"""Objects are counted after every Segment (and splitting) up to this image size; larger:
on request (a count runs in a worker thread, but its labels take 4 bytes a pixel and each
move of a slider costs seconds of CPU on a whole mosaic)."""


def count_job(
    seg: Segmentation, masks: dict[str, np.ndarray], box: tuple[int, int, int, int] | None
) -> Generator[None, None, dict[str, np.ndarray]]:
    """The objects of each class in ``masks`` (its corrected mask), cut as ``seg`` says;
    with ``box`` (the model saw that region only) counted there. Yields between classes,
    where a worker running it may be stopped."""
    labels = {}
    for name, mask in masks.items():
        if box is None:
            labels[name] = seg.instances(name, mask=mask)
        else:
            labels[name] = np.zeros(mask.shape, np.uint32)
            labels[name][box[0] : box[2], box[1] : box[3]] = seg.instances(
                name, mask=mask[box[0] : box[2], box[1] : box[3]]
            )
        yield
    return labels


class ResultLayers:
    """The result-to-layers half of :class:`.segment.SegmentWidget` (a mixin).

    Uses the widget's ``viewer``, ``status``, ``thresholds`` (the sliders' container),
    ``result`` with ``_result_for`` (image name, plane index, box) and ``_result_model``,
    ``_sliders``, ``_splitting``, ``session`` and :meth:`corrections_for`; keeps the
    running count's worker in ``counter`` (None when none runs) and its number in
    ``_count_seq``.
    """

    counter = None
    _count_seq = 0

    def _select_first_class(self, image_name: str, result: Segmentation) -> None:
        """Select the first class layer, so that the brush paints it (not an objects layer)."""
        name = layer_name(image_name, result.classes[0].name)
        if name in self.viewer.layers:
            self.viewer.layers.selection.active = self.viewer.layers[name]

    def count_objects(self, *_, done: Callable[[str], None] | None = None) -> None:
        """Label the objects of every counted class in its current (corrected) mask.

        Each goes to a hidden Labels layer ``<image> · <class> objects`` (one
        label per object, read-only: correct the class layer and count again).
        Touching objects are split as the model says (its border channel, a
        distance map at the *splitting* level, or a watershed). The masks are
        taken as they are now and cut in a worker thread (a whole well takes
        seconds): the viewer stays usable, and a newer count (another splitting,
        another press) replaces one still running. ``done(text)`` gets the counts
        ("cell 58"); without it the status line shows them.
        """
        if self.result is None or self._result_for is None:
            return
        name, _index, box = self._result_for
        if name not in self.viewer.layers:
            return
        corr = self.corrections_for(self.viewer.layers[name])
        corr.sync()
        seg = self.result.with_seeds({n: s.value for n, s in self._splitting.items()})
        masks = {
            spec.name: corr.ws.masks[spec.name] > 0  # a copy: painting on goes on meanwhile
            for spec in seg.classes
            if spec.instances and spec.name in corr.ws.masks
        }
        self._count_seq += 1
        seq = self._count_seq
        if self.counter is not None:
            self.counter.quit()  # between two classes; its result is dropped anyway
        job = count_job(seg, masks, box)
        show = lambda labels: self._show_counts(seq, name, labels, done)  # noqa: E731
        if os.environ.get("CULTURESEG_NOTHREADS") == "1":
            show(run_to_end(job))
            return
        from ._jobs import start_job

        self.counter = start_job(
            lambda: job,
            returned=show,
            errored=lambda exc: self._count_failed(seq, exc),
            finished=lambda: self._count_finished(seq),
        )

    def _show_counts(self, seq: int, name: str, labels: dict, done):
        if seq != self._count_seq or name not in self.viewer.layers:
            return  # a newer count is on its way, or the image was closed
        image = self.viewer.layers[name]
        active = self.viewer.layers.selection.active  # adding a layer would select it
        counts = []
        for cls, lab in labels.items():
            lname = f"{layer_name(name, cls)} objects"
            if lname in self.viewer.layers:
                self.viewer.layers[lname].data = lab
            else:
                layer = self.viewer.add_labels(
                    lab,
                    name=lname,
                    visible=False,
                    opacity=0.6,
                    scale=image.scale[-2:],
                    translate=image.translate[-2:],
                )
                layer.editable = False
            counts.append(f"{cls} {int(lab.max())}")
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active  # the brush stays on the class layer
        text = ", ".join(counts) or "no counted class"
        if done is not None:
            done(text)
        else:
            self.status.value = f"objects: {text}"

    def _count_failed(self, seq: int, exc: Exception):
        if seq == self._count_seq:
            self.status.value = f"error while counting objects: {exc}"
            show_error(f"Count objects: {exc}")

    def _count_finished(self, seq: int):
        if seq == self._count_seq:
            self.counter = None

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

        A class whose touching objects a distance map separates gets a second slider,
        its *splitting* (the seed threshold, :meth:`Segmentation.with_seeds`): it cuts
        the objects anew when released, the masks stay as they are. A class keeps the
        threshold the user chose for it in an earlier run, and the splitting the user
        chose for it with the same model (kept by the session, per model).
        """
        previous = {n: s.value for n, s in self._sliders.items()}
        previous_split = self.session.splitting.get(self._result_model, {})
        self.thresholds.clear()
        self._sliders, self._splitting = {}, {}
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
            if spec.instances and spec.separate == "distance":
                sp = FloatSlider(
                    label="↳ splitting",  # under its class's threshold slider
                    min=0.1,
                    max=0.9,
                    step=0.05,
                    value=previous_split.get(spec.name, spec.seed_threshold),
                    tracking=False,  # objects are cut anew once, when the slider is let go
                    tooltip=f"How readily touching {spec.name} objects are cut apart: higher "
                    "cuts more (one object may break into pieces), lower merges more. "
                    f"The model's own: {spec.seed_threshold:g}, chosen on its validation "
                    "images. Changes the objects, not the mask.",
                )
                sp.changed.connect(lambda _v, n=spec.name: self.resplit(n))
                self.thresholds.append(sp)
                self._splitting[spec.name] = sp
        self._remember_splitting()

    def _remember_splitting(self):
        """The session keeps the levels that differ from the model's own (the Plate dock
        segments with them)."""
        own = {c.name: c.seed_threshold for c in self.result.classes}
        self.session.splitting[self._result_model] = {
            n: s.value for n, s in self._splitting.items() if abs(s.value - own[n]) > 1e-6
        }

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

    def resplit(self, cls: str):
        """Cut the objects anew at the *splitting* slider of ``cls``; the masks stay."""
        if self.result is None or self._result_for is None:
            return
        name = self._result_for[0]
        if name not in self.viewer.layers:
            return
        level = self._splitting[cls].value
        self._remember_splitting()
        shape = self.viewer.layers[name].data.shape
        counted = any(
            f"{layer_name(name, c.name)} objects" in self.viewer.layers for c in self.result.classes
        )
        if counted or np.prod(shape[-2:]) <= AUTO_COUNT_PIXELS:
            self.status.value = f"cutting the objects at {cls} splitting {level:g}…"
            self.count_objects(
                done=lambda text: setattr(
                    self.status, "value", f"objects: {text} ({cls} splitting {level:g})"
                )
            )
        else:
            self.status.value = f"{cls} splitting {level:g}: press Count objects to cut them anew"
