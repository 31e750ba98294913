"""The Plate dock in a real viewer: a grid of wells coloured by a statistic, fields one by one."""

from __future__ import annotations

import csv

import numpy as np
import tifffile

from napari_cultureseg._widgets.plate import SEGMENTED, UNSURE, PlateWidget
from napari_cultureseg.cli import main
from napari_cultureseg.core.synth import phase_culture


def _plate(tmp_path):
    src, out = tmp_path / "plate", tmp_path / "results"
    src.mkdir()
    for i, name in enumerate(["A01_s1", "A01_s2", "B03_s1", "B03_s2", "A02_s1"]):
        tifffile.imwrite(src / f"{name}.tif", phase_culture((64, 80), seed=i)[0])
    # A02 is left out of the results: a field not segmented yet
    (tmp_path / "later").mkdir()
    (src / "A02_s1.tif").rename(tmp_path / "later" / "A02_s1.tif")
    args = ["segment", str(src), "--out", str(out), "--model", "tiny", "--table", "--quiet"]
    assert main([*args, "--diameter", "none"]) == 0
    (tmp_path / "later" / "A02_s1.tif").rename(src / "A02_s1.tif")
    return src, out


def test_the_plate_grid_and_its_fields(make_napari_viewer, tiny_bundle, tmp_path, qtbot):
    src, out = _plate(tmp_path)
    viewer = make_napari_viewer()
    w = PlateWidget(viewer)
    w.folder.value, w.results.value, w.model.value = src, out, "tiny"
    w.open_plate()
    assert (w.grid.rowCount(), w.grid.columnCount()) == (2, 3)  # the smallest plate: 6 wells
    assert "3 wells, 5 fields" in w.status.value
    # coloured by the fields segmented: A01 and B03 have 2, A02 none
    assert w.grid.item(0, 0).text() == "2" and w.grid.item(1, 2).text() == "2"
    assert w.grid.item(0, 1).text() == "0"
    assert w.grid.item(0, 0).background().color() != w.grid.item(0, 1).background().color()
    # coloured by a column of wells.csv: the cell counts the CLI wrote
    with open(out / "wells.csv") as f:
        counts = {r["well"]: r["cell_count"] for r in csv.DictReader(f)}
    w.statistic.value = "cell_count"
    assert w.grid.item(0, 0).text() == str(int(float(counts["A01"])))
    assert w.grid.item(0, 1).text() == "–"  # A02 has no row: not segmented
    assert SEGMENTED in w.statistic.choices
    w.statistic.value = UNSURE  # the model's mean uncertainty over each well's fields
    assert 0 < float(w.grid.item(0, 0).text()) <= 1 and w.grid.item(0, 1).text() == "–"
    # a click on B03 opens its first field: the image and its masks as class layers
    w.grid.cellClicked.emit(1, 2)
    assert w.field.value == "B03_f1"
    w.reset_choices()  # as napari does to every dock when layers change: nothing is lost
    assert w.field.value == "B03_f1" and "cell_count" in w.statistic.choices
    names = [layer.name for layer in viewer.layers]
    assert names[0] == "B03_s1" and "B03_s1 · cell" in names and "B03_s1 · debris" in names
    mask = tifffile.imread(out / "B03_s1_cell.tif") > 0
    np.testing.assert_array_equal(viewer.layers["B03_s1 · cell"].data > 0, mask)
    # a correction, then the next field (PageDown): the old field's layers go, its
    # correction is saved; coming back shows the correction, not the mask read again
    layer = viewer.layers["B03_s1 · cell"]
    fixed = layer.data.copy()
    fixed[5:25, 5:25] = 1
    layer.data = fixed
    w.step(1)
    assert w.field.value == "B03_f2"
    assert "B03_s1 · cell" not in [x.name for x in viewer.layers]
    assert viewer.layers[0].name == "B03_s2"
    w.step(-1)
    np.testing.assert_array_equal(viewer.layers["B03_s1 · cell"].data, fixed)
    # a field without masks opens with empty class layers, ready to paint, and says so
    w.field.value = "A02_f1"
    assert [x.name for x in viewer.layers] == ["A02_s1", "A02_s1 · cell", "A02_s1 · debris"]
    assert not viewer.layers["A02_s1 · cell"].data.any()
    assert "not segmented yet" in w.status.value
