"""The Plate dock: a plate's wells as a grid, coloured by a per-well statistic; fields one by one.

The plate is read from its folder's file names (:func:`core.plate.discover_plate`);
the statistics come from the ``wells.csv`` that ``cultureseg segment --table``
wrote into the results folder, and a field's masks from the same folder
(``<field>_<class>.tif``). Opening a field shows its image and one Labels layer
per class of the model, bound to the field's workspace as the Segment widget
binds them: a hand correction is saved within seconds and never overwritten by
the masks read again later. PageDown / PageUp move to the next / previous field.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton
from napari.utils.notifications import show_error
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ..core.batch import read_record
from ..core.bundles import DEFAULT_MODEL, list_bundles, load_bundle
from ..core.images import ImageError, read_image
from ..core.plate import PlateError, discover_plate, well_position
from ._corrections import workspace_key
from ._session import session_for

SEGMENTED = "fields segmented"
"""The statistic every plate has: how many of a well's fields have masks in the results."""
UNSURE = "uncertainty (correct next)"
"""The model's mean uncertainty over a well's segmented fields (:meth:`Segmentation.uncertainty`):
the wells whose corrections would teach it most are the brightest."""


def read_wells(path: Path) -> dict[str, dict[str, float]]:
    """``wells.csv`` as ``{well: {column: number}}`` (columns that hold numbers only)."""
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values = {}
            for k, v in row.items():
                try:
                    values[k] = float(v)
                except (TypeError, ValueError):
                    continue
            out[str(row.get("well", ""))] = values
    return out


def ramp(t: float) -> QColor:
    """A colour from dark blue (0) through teal to yellow (1), readable with dark text."""
    stops = [(0.0, (40, 50, 110)), (0.5, (40, 150, 140)), (1.0, (250, 230, 80))]
    t = float(np.clip(t, 0.0, 1.0))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:], strict=False):
        if t <= t1:
            a = (t - t0) / (t1 - t0)
            return QColor(*(round(x + a * (y - x)) for x, y in zip(c0, c1, strict=True)))
    return QColor(*stops[-1][1])


class PlateWidget(Container):
    """Dock widget: open a plate folder, see its wells, open its fields one after another."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.folder = FileEdit(label="plate folder", mode="d")
        self.results = FileEdit(label="results folder", mode="d")
        self.results.tooltip = (
            "Where `cultureseg segment PLATE --out RESULTS --table` wrote the masks and "
            "wells.csv (may be empty: then only the images open)."
        )
        models = list(list_bundles())
        self.model = ComboBox(
            label="model",
            choices=lambda _: list(list_bundles()),
            value=DEFAULT_MODEL if DEFAULT_MODEL in models else (models[0] if models else None),
        )
        self.open_button = PushButton(text="Open plate")
        # choices from callables: napari resets every dock's choices when layers change
        self._statistics: list = [SEGMENTED]
        self._fields: list = []
        self.statistic = ComboBox(label="colour wells by", choices=lambda _: self._statistics)
        self.field = ComboBox(label="field", choices=lambda _: self._fields)
        self.prev_button = PushButton(text="◀ previous (PageUp)")
        self.next_button = PushButton(text="next (PageDown) ▶")
        self.status = Label(value="")
        self.extend(
            [
                self.folder,
                self.results,
                self.model,
                self.open_button,
                self.statistic,
                self.field,
                self.prev_button,
                self.next_button,
                self.status,
            ]
        )
        self.grid = QTableWidget()
        self.grid.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.grid.setMinimumHeight(220)
        self.native.layout().insertWidget(5, self.grid)
        self.plate = None
        self.wells: dict[str, dict[str, float]] = {}
        self._layers: list = []  # the layers this dock opened for the current field
        self._key: str | None = None  # the current field's workspace
        self.session = session_for(napari_viewer)  # autosaves; shared with the other docks
        self.session.attach(self)
        self.open_button.changed.connect(self.open_plate)
        self.statistic.changed.connect(self.colour_grid)
        self.field.changed.connect(self.open_field)
        self.prev_button.changed.connect(lambda: self.step(-1))
        self.next_button.changed.connect(lambda: self.step(1))
        self.grid.cellClicked.connect(self._on_cell)
        self.viewer.bind_key("PageDown", lambda _v: self.step(1), overwrite=True)
        self.viewer.bind_key("PageUp", lambda _v: self.step(-1), overwrite=True)

    # ----------------------------------------------------------------- plate
    def open_plate(self, *_):
        try:
            plate = discover_plate(Path(self.folder.value))
        except (PlateError, OSError) as exc:
            self.status.value = f"not opened: {exc}"
            show_error(str(exc))
            return
        self.plate = plate
        table = Path(self.results.value) / "wells.csv"
        self.wells = read_wells(table) if table.is_file() else {}
        columns = sorted({k for v in self.wells.values() for k in v})
        self._statistics = [SEGMENTED, UNSURE, *columns]
        self.statistic.reset_choices()
        rows, cols = plate.shape
        self.grid.setRowCount(rows)
        self.grid.setColumnCount(cols)
        self.grid.setVerticalHeaderLabels([chr(ord("A") + r) for r in range(rows)])
        self.grid.setHorizontalHeaderLabels([str(c + 1) for c in range(cols)])
        side = max(28, min(48, 560 // max(cols, 1)))
        for c in range(cols):
            self.grid.setColumnWidth(c, side)
        self._fields = [(self._field_label(f), f.key) for f in plate.fields]
        self.field.reset_choices()
        self.colour_grid()
        self.status.value = (
            f"{plate.layout}: {len(plate.wells)} wells, {len(plate.fields)} fields"
            + (f", {len(plate.ignored)} files not read" if plate.ignored else "")
            + ("" if self.wells else "; no wells.csv in the results folder")
        )

    def field_status(self, field) -> tuple[bool, float | None]:
        """Whether ``field`` has masks in the results folder, and the model's uncertainty
        there (from the field's record, one read)."""
        stem = Path(field.path()).stem
        rec = read_record(self.results.value, stem)
        if rec is None:
            return any(Path(self.results.value).glob(f"{stem}_*.tif")), None
        done = bool(rec.get("done"))
        return done, rec.get("uncertainty") if done else None

    def segmented(self, field) -> bool:
        return self.field_status(field)[0]

    def uncertainty(self, field) -> float | None:
        return self.field_status(field)[1]

    def _field_label(self, f) -> str:
        done, u = self.field_status(f)
        if not done:
            return f"{f.key} (not segmented)"
        return f"{f.key} (segmented" + (f", uncertainty {u:.3f})" if u is not None else ")")

    def statistic_of(self, well: str) -> float | None:
        if self.statistic.value == SEGMENTED:
            return float(sum(self.segmented(f) for f in self.plate.fields_of(well)))
        if self.statistic.value == UNSURE:
            known = [
                u for f in self.plate.fields_of(well) if (u := self.uncertainty(f)) is not None
            ]
            return float(np.mean(known)) if known else None
        return self.wells.get(well, {}).get(self.statistic.value)

    def colour_grid(self, *_):
        if self.plate is None:
            return
        values = {w: self.statistic_of(w) for w in self.plate.wells}
        known = [v for v in values.values() if v is not None]
        lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
        self.grid.clearContents()
        for well, v in values.items():
            r, c = well_position(well)
            text = "–" if v is None else (f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.3g}")
            item = QTableWidgetItem(text)
            item.setToolTip(f"{well}: {self.statistic.value} = {text}")
            if v is not None:
                item.setBackground(ramp((v - lo) / (hi - lo) if hi > lo else 0.5))
            self.grid.setItem(r, c, item)

    def _on_cell(self, row: int, col: int):
        if self.plate is None:
            return
        for f in self.plate.fields:
            if well_position(f.well) == (row, col):
                self.field.value = f.key
                return

    # ----------------------------------------------------------------- fields
    def step(self, by: int):
        keys = list(self.field.choices)
        if not keys or self.field.value not in keys:
            return
        i = keys.index(self.field.value) + by
        if 0 <= i < len(keys):
            self.field.value = keys[i]

    def open_field(self, key=None):
        if self.plate is None or not key:
            return
        field = next(f for f in self.plate.fields if f.key == key)
        path = Path(field.path())
        try:
            plane = read_image(path)
        except ImageError as exc:
            self.status.value = f"{path.name}: {exc}"
            show_error(str(exc))
            return
        last = self.session.corrections.pop(self._key, None) if self._key else None
        if last is not None:
            last.flush()  # the last field's corrections are on disk before it closes
        for layer in self._layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        image = self.viewer.add_image(plane, name=path.stem, metadata={"path": str(path)})
        self._layers = [image]
        bundle = load_bundle(self.model.value)
        classes = bundle.config.classes
        self._key = workspace_key(image, plane, ())
        corr = self.session.corrections_for(image, plane, (), classes)
        corr.restore()
        shown = 0
        for spec in classes:
            mask_file = Path(self.results.value) / f"{path.stem}_{spec.name}.tif"
            if mask_file.is_file():
                import tifffile

                mask = tifffile.imread(mask_file) > 0
                if mask.shape == plane.shape[:2]:
                    corr.set_from_model(
                        spec.name, spec.colour, mask, kind="segment", model=self.model.value
                    )
                    shown += 1
            if spec.name in corr.layers:
                self._layers.append(corr.layers[spec.name])
        r, c = well_position(field.well)
        self.grid.setCurrentCell(r, c)
        self.status.value = f"{field.key}: {path.name}; " + (
            f"{shown} class mask(s) from the results" if shown else "not segmented yet"
        )
