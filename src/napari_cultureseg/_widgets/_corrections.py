"""Class layers of one image plane bound to its on-disk workspace.

Every change to a class layer (paint, erase, fill, undo, a threshold) reaches
the :class:`~napari_cultureseg.core.workspace.Workspace`; a 500 ms Qt timer
saves it at most every second, so a correction is on disk within about 1.5 s.
Pixels the user has reviewed (a square of ``REVIEW_MARGIN`` pixels around
every edited pixel, or a whole accepted view) are never overwritten by the
model again: a new segmentation or threshold changes only unreviewed pixels.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap

from ..core.autosave import Autosaver
from ..core.workspace import Workspace
from ..core.workspace_files import key_for_array, key_for_path

REVIEW_MARGIN = 8
"""Pixels around every hand-edited pixel that count as reviewed (Chebyshev distance)."""


def class_colormap(colour: str) -> DirectLabelColormap:
    """Label 1 in the class colour, everything else transparent."""
    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: colour})


def layer_name(image_name: str, class_name: str) -> str:
    return f"{image_name} · {class_name}"


def workspace_key(layer: Image, plane: np.ndarray, index: tuple[int, ...]) -> str:
    """Stable key of an image plane: from its file when it has one, else from its pixels."""
    path = layer.source.path or layer.metadata.get("path")
    key = key_for_path(path) if path else key_for_array(plane)
    return key + "".join(f"-p{i}" for i in index)


class Corrections:
    """The workspace of one image plane and the Labels layers that show its classes."""

    def __init__(self, viewer, image: Image, plane: np.ndarray, index: tuple[int, ...], classes):
        self.viewer = viewer
        self.image_name = image.name
        self.image = image
        self.index = index
        path = image.source.path or image.metadata.get("path")
        self.ws = Workspace.open(
            workspace_key(image, plane, index),
            image_name=image.name,
            image_path=path,
            shape=plane.shape[:2],
            classes=[(c.name, c.colour) for c in classes],
        )
        self.autosaver = Autosaver(self.ws, interval=1.0, before_save=self.sync)
        self.layers: dict[str, Labels] = {}
        self.derived: dict[str, tuple] = {}
        self._dirty: set[str] = set()
        self._kinds: dict[str, set[str]] = {}  # edit kinds seen per class since the last sync
        self._bound: list[tuple] = []  # (event, callback) this workspace listens to

    def ensure_classes(self, classes) -> None:
        """Add classes a (new) model predicts that this workspace does not have yet."""
        for c in classes:
            if c.name not in self.ws.masks:
                self.ws._add_class(c.name, c.colour)

    # ------------------------------------------------------------- layers
    def layer_for(self, cls: str, colour: str, *, editable: bool = True) -> Labels:
        """The class layer (created or reused), bound to the workspace."""
        name = layer_name(self.image_name, cls)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if not isinstance(layer, Labels) or layer.data.shape != self.ws.shape:
            if layer is not None:
                self.viewer.layers.remove(layer)
            data = (
                self.ws.masks[cls].copy()
                if cls in self.ws.masks
                else np.zeros(self.ws.shape, np.uint8)
            )
            layer = self.viewer.add_labels(
                data,
                name=name,
                colormap=class_colormap(colour),
                opacity=0.6,
                scale=self.image.scale[-2:],
                translate=self.image.translate[-2:],
                metadata={
                    "cultureseg": {
                        "class": cls,
                        "colour": colour,
                        "image": self.image_name,
                        "workspace": str(self.ws.folder),
                    }
                },
            )
        layer.editable = editable
        if editable and cls not in self.layers:
            for event in (layer.events.paint, layer.events.data, layer.events.labels_update):
                callback = event.connect(lambda _e, c=cls, lay=layer: self._mark(c, lay))
                self._bound.append((event, callback))
        if editable:
            self.layers[cls] = layer
        return layer

    def release(self) -> dict[str, Labels]:
        """Save, then let go of the class layers: they stay in the viewer but no longer
        write to this workspace. Returns them by class (derived classes included), for
        :meth:`adopt` by the next image's workspace."""
        self.flush()
        for event, callback in self._bound:
            event.disconnect(callback)
        self._bound.clear()
        out = {}
        for cls in [*self.ws.class_names, *self.derived]:
            name = layer_name(self.image_name, cls)
            if name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
                out[cls] = self.viewer.layers[name]
        self.layers.clear()
        return out

    def adopt(self, layers: dict[str, Labels]) -> dict[str, Labels]:
        """Show this workspace's saved masks in class layers another workspace
        :meth:`release`-d (renamed, refilled, their undo history cleared) instead of
        new ones: napari takes about half a second to remove a layer and another to
        add one, a field browsed after another reuses them. Returns the layers not
        adopted (classes this workspace does not have)."""
        left = {}
        for cls, layer in layers.items():
            if cls not in self.ws.masks or cls in self.layers:
                left[cls] = layer
                continue
            layer.name = layer_name(self.image_name, cls)
            layer.data = self.ws.masks[cls].copy()  # before binding: not an edit
            # undo must not bring the last image back: napari clears a Labels layer's undo
            # history when it stops being editable (the public way to clear it)
            mode = layer.mode
            layer.editable = False
            layer.editable = True
            layer.mode = mode
            for prop in ("scale", "translate"):  # set only when they differ: each redraws
                value = np.asarray(getattr(self.image, prop))[-2:]
                if not np.array_equal(np.asarray(getattr(layer, prop)), value):
                    setattr(layer, prop, value)
            colour = self.ws.colours.get(cls, "#ff4040")
            if layer.metadata.get("cultureseg", {}).get("colour") != colour:
                layer.colormap = class_colormap(colour)
            layer.metadata["cultureseg"] = {
                **layer.metadata.get("cultureseg", {}),
                "class": cls,
                "colour": colour,
                "image": self.image_name,
                "workspace": str(self.ws.folder),
            }
            self.layer_for(cls, colour)
        return left

    def _mark(self, cls: str, layer=None) -> None:
        # the kind is read now, at the edit: the layer's mode may change before the next save
        mode = str(getattr(layer, "mode", "paint"))
        kind = {"erase": "erase", "fill": "fill"}.get(mode, "paint")
        self._kinds.setdefault(cls, set()).add(kind)
        self._dirty.add(cls)
        self.autosaver.touch()

    def sync(self) -> None:
        """Hand edited layers to the workspace (marks edited surroundings reviewed)."""
        for cls in sorted(self._dirty):
            layer = self.layers.get(cls)
            if layer is not None and layer.data.shape == self.ws.shape:
                kinds = self._kinds.get(cls) or {"paint"}
                kind = next(iter(kinds)) if len(kinds) == 1 else "edit"
                self.ws.apply_edit(cls, np.asarray(layer.data) > 0, kind=kind, margin=REVIEW_MARGIN)
        self._dirty.clear()
        self._kinds.clear()
        self.update_derived()

    def restore(self) -> list[str]:
        """Show the workspace's saved masks as layers; returns the classes restored."""
        for cls in self.ws.class_names:
            self.layer_for(cls, self.ws.colours.get(cls, "#ff4040"))
        return self.ws.class_names

    # ------------------------------------------------------------- model output
    def merge(self, cls: str, model_mask: np.ndarray, box=None) -> np.ndarray:
        """Model mask where unreviewed, the user's where reviewed (optionally in a box only)."""
        self.sync()
        stored = self.ws.masks[cls].astype(bool)
        new = stored.copy()
        ys, xs = (
            (slice(box[0], box[2]), slice(box[1], box[3])) if box else (slice(None), slice(None))
        )
        rev = self.ws.reviewed[cls][ys, xs]
        new[ys, xs] = np.where(rev, stored[ys, xs], model_mask[ys, xs])
        return new

    def set_from_model(
        self,
        cls: str,
        colour: str,
        model_mask: np.ndarray,
        *,
        kind: str,
        model: str | None = None,
        box=None,
    ) -> Labels:
        """Apply a model's mask to ``cls`` without touching reviewed pixels, and show it."""
        merged = self.merge(cls, model_mask, box)
        self.ws.set_mask(cls, merged, kind=kind, model=model)
        layer = self.layer_for(cls, colour)
        layer.data = merged.astype(np.uint8)  # equals the workspace: no edit is recorded
        self._dirty.discard(cls)
        self.autosaver.touch()
        return layer

    def set_derived(self, name: str, colour: str, base: str, minus: tuple[str, ...]) -> None:
        """A read-only layer computed from the (corrected) base classes, kept up to date."""
        self.derived[name] = (colour, base, minus)
        self.update_derived()

    def update_derived(self) -> None:
        for name, (colour, base, minus) in self.derived.items():
            if base not in self.ws.masks:
                continue
            m = self.ws.masks[base].astype(bool)
            for other in minus:
                if other in self.ws.masks:
                    m &= ~self.ws.masks[other].astype(bool)
            layer = self.layer_for(name, colour, editable=False)
            if not np.array_equal(layer.data > 0, m):
                layer.data = m.astype(np.uint8)

    # ------------------------------------------------------------- review
    def visible_box(self) -> tuple[int, int, int, int]:
        """The part of the image on screen, in pixels (y0, x0, y1, x1), clipped to the image."""
        from ._view import visible_box

        return visible_box(self.image, self.ws.shape)

    def accept_view(self, cls: str | None = None) -> int:
        """Mark the visible region of ``cls`` (None: every class) as reviewed and correct."""
        self.sync()
        n = self.ws.accept_region(cls, self.visible_box())
        self.autosaver.touch()
        return n

    def reviewed_pixels(self) -> dict[str, int]:
        return {c: int(np.count_nonzero(r)) for c, r in self.ws.reviewed.items()}

    def tick(self) -> bool:
        """Called by a Qt timer: save if something changed and the interval passed."""
        return self.autosaver.maybe_save()

    def flush(self) -> None:
        self.sync()
        self.autosaver.flush()
