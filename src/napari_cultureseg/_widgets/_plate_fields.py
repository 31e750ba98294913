"""The Plate dock's fields (:mod:`.plate`): opening one in the viewer with its saved
masks bound to its workspace, reusing the last field's image layer, and stepping to
the next or previous field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error

from ..core.bundles import load_bundle
from ..core.images import ImageError, read_image
from ..core.plate import well_position
from ._corrections import workspace_key


class FieldViewer:
    """The field-by-field half of :class:`.plate.PlateWidget` (a mixin).

    Uses the widget's ``viewer``, ``session``, ``plate``, ``field``, ``model``,
    ``results``, ``grid``, ``status``, ``_layers``, ``_key``, ``_open`` and
    :meth:`_channel`.
    """

    def step(self, by: int):
        keys = list(self.field.choices)
        if not keys or self.field.value not in keys:
            return
        i = keys.index(self.field.value) + by
        if 0 <= i < len(keys):
            self.field.value = keys[i]

    def _reuse_image(self, plane: np.ndarray, path: Path, name: str):
        """The last field's image layer showing ``plane`` instead (napari adds and removes
        layers slowly), or None when there is none to reuse or it cannot show ``plane``."""
        from napari.layers import Image

        image = self._layers[0] if self._layers else None
        rgb = plane.ndim == 3 and plane.shape[-1] in (3, 4)
        if not isinstance(image, Image) or image not in self.viewer.layers or image.rgb != rgb:
            return None
        image.data = plane
        image.metadata["path"] = str(path)
        image.name = name
        if not rgb:
            image.reset_contrast_limits_range()
            image.reset_contrast_limits()
        return image

    def _saved_masks(self, stem: str, classes) -> dict[str, np.ndarray]:
        """The masks of ``classes`` the results folder holds for a field (written with
        ``--format tif`` or ``ome-zarr``)."""
        import tifffile

        out = Path(self.results.value)
        masks = {
            c.name: tifffile.imread(f) > 0
            for c in classes
            if (f := out / f"{stem}_{c.name}.tif").is_file()
        }
        zarr_field = out / f"{stem}.ome.zarr"
        if not masks and zarr_field.is_dir():
            from ..core.omezarr import read_labels

            try:
                masks = {k: v > 0 for k, v in read_labels(zarr_field).items()}
            except (ValueError, OSError, KeyError) as exc:
                self.status.value = f"{zarr_field.name} not read: {exc}"
        return masks

    def open_field(self, key=None, force: bool = False):
        if self.plate is None or not key or (key == self._open and not force):
            return  # (napari resets the choices when layers change: the same field stays)
        field = next(f for f in self.plate.fields if f.key == key)
        ch = self._channel()
        path = Path(field.path(ch))
        channel_plane = field.channel_plane(ch)  # an OME-Zarr field: the channel's plane
        index = () if channel_plane is None else (channel_plane,)
        try:
            plane = np.asarray(read_image(path, plane=channel_plane))
        except ImageError as exc:
            self.status.value = f"{path.name}: {exc}"
            show_error(str(exc))
            return
        last = self.session.corrections.pop(self._key, None) if self._key else None
        # the last field's corrections are saved, and its class layers let go of its workspace
        free = last.release() if last is not None else {}
        image = self._reuse_image(plane, path, field.stem)
        if image is None:
            for layer in [*self._layers, *free.values()]:
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
            free = {}
            image = self.viewer.add_image(plane, name=field.stem, metadata={"path": str(path)})
        self._layers = [image]
        bundle = load_bundle(self.model.value)
        classes = bundle.config.classes
        self._key = workspace_key(image, plane, index)
        corr = self.session.corrections_for(image, plane, index, classes)
        for layer in corr.adopt(free).values():  # classes the new field's workspace lacks
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        corr.restore()
        shown = 0
        saved = self._saved_masks(field.stem, classes)
        for spec in classes:
            mask = saved.get(spec.name)
            if mask is not None:
                if mask.shape == plane.shape[:2]:
                    corr.set_from_model(
                        spec.name, spec.colour, mask, kind="segment", model=self.model.value
                    )
                    shown += 1
            if spec.name in corr.layers:
                self._layers.append(corr.layers[spec.name])
        self._open = key
        r, c = well_position(field.well)
        self.grid.setCurrentCell(r, c)
        self.status.value = f"{field.key}: {path.name}; " + (
            f"{shown} class mask(s) from the results" if shown else "not segmented yet"
        )
