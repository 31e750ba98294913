"""The Plate dock: a plate's wells as a grid, coloured by a per-well statistic; fields one by one.

The plate is read from its folder's file names (:func:`core.plate.discover_plate`);
the statistics come from the ``wells.csv`` that ``cultureseg segment --table``
wrote into the results folder, and a field's masks from the same folder
(``<field>_<class>.tif``). Opening a field shows its image and one Labels layer
per class of the model, bound to the field's workspace as the Segment widget
binds them: a hand correction is saved within seconds and never overwritten by
the masks read again later. PageDown / PageUp move to the next / previous field.

Opening a field in the viewer is in :mod:`._plate_fields`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ..core.batch import jobs_for, segment_fields
from ..core.batch_outputs import TABLES, own_outputs, read_record, record_outputs, write_tables
from ..core.bundles import DEFAULT_MODEL, list_bundles
from ..core.plate import PlateError, discover_plate, well_position
from ._jobs import TTA_CHOICES
from ._plate_fields import FieldViewer
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


class PlateWidget(FieldViewer, Container):
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
        self.tta = ComboBox(
            label="test-time augmentation",
            choices=TTA_CHOICES,
            value=1,
            tooltip="Average the predictions of flipped and rotated copies of every field: "
            "somewhat better objects, as many times slower. Set to the model's own when a "
            "model is chosen; turn it off to segment a large plate faster.",
        )
        self.model.changed.connect(self._on_model_changed)
        self._on_model_changed(self.model.value)
        self.open_button = PushButton(text="Open plate")
        self.segment_button = PushButton(text="Segment the plate (in the background)")
        self.segment_button.tooltip = (
            "Segment every field not segmented yet into the results folder, one after "
            "another, while you browse and correct; a field opened once it is done shows "
            "its masks at once. Fields already done are skipped."
        )
        self.stop_button = PushButton(text="Stop (after this field)", enabled=False)
        self.progress = ProgressBar(value=0, max=1, label="fields segmented")
        # choices from callables: napari resets every dock's choices when layers change
        self._statistics: list = [SEGMENTED]
        self._fields: list = []
        self.statistic = ComboBox(label="colour wells by", choices=lambda _: self._statistics)
        self.field = ComboBox(label="field", choices=lambda _: self._fields)
        self._channels: list = []
        self.channel = ComboBox(label="channel", choices=lambda _: self._channels)
        self.channel.tooltip = "The channel of a multichannel plate that is shown and segmented."
        self.channel.changed.connect(lambda *_: self._open and self.open_field(self._open, True))
        self.prev_button = PushButton(text="◀ previous (PageUp)")
        self.next_button = PushButton(text="next (PageDown) ▶")
        self.status = Label(value="")
        self.extend(
            [
                self.folder,
                self.results,
                self.model,
                self.tta,
                self.open_button,
                self.segment_button,
                self.stop_button,
                self.progress,
                self.statistic,
                self.channel,
                self.field,
                self.prev_button,
                self.next_button,
                self.status,
            ]
        )
        self.grid = QTableWidget()
        self.grid.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.grid.setMinimumHeight(220)
        self.native.layout().insertWidget(9, self.grid)  # under the statistic's combo
        self.plate = None
        self.wells: dict[str, dict[str, float]] = {}
        self._layers: list = []  # the layers this dock opened for the current field
        self._key: str | None = None  # the current field's workspace
        self._open: str | None = None  # the current field's key
        self.worker = None  # segmenting the plate
        self._stopping = False
        self._done: dict = {}  # the fields segmented in the results folder, by image stem
        self._status: dict = {}  # (segmented, uncertainty) by field stem (see field_status)
        self.session = session_for(napari_viewer)  # autosaves; shared with the other docks
        self.session.attach(self)
        self.open_button.changed.connect(self.open_plate)
        self.segment_button.changed.connect(self.segment_plate)
        self.stop_button.changed.connect(self.stop)
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
        self._status = {}
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
        self._channels = [(c or "(one)", c) for c in plate.channels]
        self.channel.reset_choices()
        self._fields = [(self._field_label(f), f.key) for f in plate.fields]
        self.field.reset_choices()
        self.progress.max = max(1, len(plate.fields))
        self.progress.value = sum(self.segmented(f) for f in plate.fields)
        self.colour_grid()
        self.status.value = (
            f"{plate.layout}: {len(plate.wells)} wells, {len(plate.fields)} fields"
            + (f", {len(plate.ignored)} files not read" if plate.ignored else "")
            + ("" if self.wells else "; no wells.csv in the results folder")
        )

    def field_status(self, field) -> tuple[bool, float | None]:
        """Whether ``field`` has masks in the results folder, and the model's uncertainty
        there (from the field's record, one read)."""
        stem = field.stem
        if stem not in self._status:  # read once per plate opened, then kept up to date
            rec = read_record(self.results.value, stem)
            if rec is None:
                got = any(Path(self.results.value).glob(f"{stem}_*.tif")), None
            else:
                done = bool(rec.get("done"))
                got = done, rec.get("uncertainty") if done else None
            self._status[stem] = got
        return self._status[stem]

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

    def _on_model_changed(self, name):
        """The test-time augmentation starts at the chosen model's own."""
        from ..core.bundles import load_bundle

        try:
            self.tta.value = load_bundle(name).config.tta if name else 1
        except Exception:  # a broken user bundle: Segment the plate says why
            self.tta.value = 1

    # ----------------------------------------------------------- segmenting
    def segment_plate(self, *_):
        """Segment the fields not done yet into the results folder, in a worker thread."""
        if self.worker is not None:
            return
        if self.plate is None:
            self.status.value = "open a plate first"
            return
        out = Path(self.results.value)
        if str(self.results.value) in ("", ".") or not out.parent.is_dir():
            self.status.value = "choose a results folder to segment into"
            show_error("Plate: choose a results folder to segment into")
            return
        from ..core.bundles import load_bundle as load
        from ..core.device import resolve_device

        try:
            out.mkdir(exist_ok=True)
            load(self.model.value).network(resolve_device("auto"))  # native libraries: GUI thread
            import os

            seeds = dict(self.session.splitting.get(self.model.value) or {})
            options = {
                "device": "auto",
                "diameter": "auto",
                "table": True,
                "threads": max(1, (os.cpu_count() or 1) - 1),  # one core stays with napari
                "seeds": seeds,  # the Segment dock's splitting of this model, if moved
                "tta": int(self.tta.value),
            }
            ch = self._channel()
            todo, done, refused = jobs_for(
                [(f.path(ch), f.stem, f.channel_plane(ch)) for f in self.plate.fields],
                out,
                self.model.value,
                options,
            )
        except (OSError, ValueError) as exc:
            self.status.value = f"not started: {exc}"
            show_error(f"Plate: {exc}")
            return
        self._done = {d.stem: d for d in done}
        self._status = {d.stem: (True, d.uncertainty) for d in done}  # this results folder's
        self.progress.max, self.progress.value = max(1, len(self.plate.fields)), len(done)
        self._stopping = False
        note = (
            f"; {len(refused)} field(s) left out: files of theirs in the results folder "
            f"were not written by napari-cultureseg ({', '.join(refused[:3])})"
            if refused
            else ""
        )
        if not todo:
            self.status.value = f"every field is segmented already{note}"
            self._write_tables()
            return
        if seeds:
            note += "; splitting as in the Segment dock: " + ", ".join(
                f"{n} {v:g}" for n, v in seeds.items()
            )
        if int(self.tta.value) > 1:
            note += f"; {int(self.tta.value)} flipped copies of each (test-time augmentation)"
        self.status.value = f"segmenting {len(todo)} field(s) in the background{note}"
        self.segment_button.enabled, self.stop_button.enabled = False, True
        from ._jobs import start_job

        self.worker = start_job(
            segment_fields,
            todo,
            yielded=self._on_field_done,
            errored=self._on_error,
            finished=self._on_segmented,
        )

    def stop(self, *_):
        if self.worker is not None:
            self._stopping = True
            self.worker.quit()
            self.status.value = "stopping after this field…"

    def _on_field_done(self, r):
        self.progress.value = min(self.progress.max, self.progress.value + 1)
        if r.error:
            self.status.value = f"{Path(r.path).name} failed: {r.error}"
            return
        self._done[r.stem] = r
        self._status[r.stem] = (True, r.uncertainty)
        n = f"{self.progress.value}/{self.progress.max}"
        self.status.value = f"segmented {Path(r.path).name} ({n})"
        self._relabel_fields()
        if self.statistic.value in (SEGMENTED, UNSURE):
            self.colour_grid()
        current = self._current_field()
        if current is not None and current.stem == r.stem:
            self.open_field(current.key, force=True)  # the open field's masks, at once

    def _relabel_fields(self):
        """Field choices with their current status, the open field staying open (magicgui
        would select the first choice while it rebuilds them)."""
        self._fields = [(self._field_label(f), f.key) for f in self.plate.fields]  # (cached)
        with self.field.changed.blocked():
            self.field.reset_choices()
            if self._open is not None:
                self.field.value = self._open

    def _on_error(self, exc):
        self.status.value = f"segmenting stopped: {exc}"
        show_error(f"Plate: {exc}")

    def _on_segmented(self):
        stopped = self._stopping
        self.worker = None
        self.segment_button.enabled, self.stop_button.enabled = True, False
        self._write_tables()
        if stopped:
            show_info("Plate: stopped; every field segmented so far is saved.")

    def _write_tables(self):
        """objects.csv and wells.csv of every segmented field, then the grid's statistics."""
        out = Path(self.results.value)
        ours = own_outputs(out)
        if any((out / t).exists() and t not in ours for t in TABLES):
            self.status.value += "; tables not written: objects.csv or wells.csv is not ours"
            return
        stems = [f.stem for f in self.plate.fields]
        done = [self._done[s] for s in stems if s in self._done]
        write_tables(out, done)
        record_outputs(out, TABLES)
        self.wells = read_wells(out / "wells.csv")
        columns = sorted({k for v in self.wells.values() for k in v})
        self._statistics = [SEGMENTED, UNSURE, *columns]
        self.statistic.reset_choices()
        self.colour_grid()

    def _channel(self) -> str | None:
        """The chosen channel, or None (the first) when the plate names none."""
        ch = self.channel.value
        return ch if self.plate is not None and ch in self.plate.channels else None

    def _current_field(self):
        if self.plate is None or not self._open:
            return None
        return next((f for f in self.plate.fields if f.key == self._open), None)
