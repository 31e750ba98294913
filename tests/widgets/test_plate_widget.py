"""The Plate dock in a real viewer: a grid of wells coloured by a statistic, fields one by one."""

from __future__ import annotations

import csv

import numpy as np
import pytest
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


def test_next_field_reuses_the_layers_and_keeps_workspaces_apart(
    make_napari_viewer, tiny_bundle, tmp_path, qtbot
):
    """Browsing reuses the image and class layers (napari adds and removes layers slowly),
    yet an edit after the move reaches the new field's workspace only, the last field's
    saved correction stays as it was, and undo does not bring the last field back."""
    from napari_cultureseg._widgets._session import session_for

    src, out = _plate(tmp_path)
    viewer = make_napari_viewer()
    w = PlateWidget(viewer)
    w.folder.value, w.results.value, w.model.value = src, out, "tiny"
    w.open_plate()
    w.field.value = "A01_f1"
    before = {id(x) for x in viewer.layers}
    cell = viewer.layers["A01_s1 · cell"]
    cell.selected_label, cell.brush_size = 1, 9
    cell.paint((30, 30), 1)  # a brush stroke on A01_s1: napari records it for undo
    first = cell.data.copy()
    first[0:10, 0:10] = 1
    cell.data = first  # and a correction on A01_s1
    w.step(1)
    assert w.field.value == "A01_f2"
    assert {id(x) for x in viewer.layers} == before  # the same layers, renamed and refilled
    assert [x.name for x in viewer.layers] == ["A01_s2", "A01_s2 · cell", "A01_s2 · debris"]
    np.testing.assert_array_equal(viewer.layers[0].data, tifffile.imread(src / "A01_s2.tif"))
    np.testing.assert_array_equal(cell.data > 0, tifffile.imread(out / "A01_s2_cell.tif") > 0)
    assert cell.metadata["cultureseg"]["image"] == "A01_s2"
    second = cell.data.copy()
    second[40:50, 40:50] = 1
    cell.data = second  # a correction on A01_s2, in the reused layer
    session_for(viewer).flush()
    w.step(-1)  # back to A01_s1: its own correction, untouched by the edit on A01_s2
    np.testing.assert_array_equal(cell.data, first)
    w.step(1)
    np.testing.assert_array_equal(cell.data, second)
    cell.undo()  # the stroke on A01_s1 is not undone into A01_s2
    np.testing.assert_array_equal(cell.data, second)


def test_segmenting_the_plate_in_the_background(make_napari_viewer, tiny_bundle, tmp_path, qtbot):
    """The dock segments the fields not done yet in a worker thread: the open field shows
    its masks when they come, with the user's correction kept; done fields are not redone;
    the tables grow the new well; a folder with someone else's masks is not written into."""
    src, out = _plate(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("A01_s1_*.tif")}
    viewer = make_napari_viewer()
    w = PlateWidget(viewer)
    w.folder.value, w.results.value, w.model.value = src, out, "tiny"
    w.open_plate()
    w.field.value = "A02_f1"  # not segmented: empty layers
    layer = viewer.layers["A02_s1 · cell"]
    painted = layer.data.copy()
    painted[2:12, 2:12] = 1
    layer.data = painted  # the user paints before the model has run
    w.segment_plate()
    assert w.worker is not None and not w.segment_button.enabled
    qtbot.waitUntil(lambda: w.worker is None, timeout=60000)
    assert (out / "A02_s1_cell.tif").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("A01_s1_*.tif")} == before
    model = tifffile.imread(out / "A02_s1_cell.tif") > 0
    shown = viewer.layers["A02_s1 · cell"].data > 0
    assert shown[2:12, 2:12].all()  # the correction survives the model's masks
    outside = np.ones_like(shown)
    outside[:20, :20] = False  # beyond the reviewed margin the model's mask shows
    np.testing.assert_array_equal(shown[outside], model[outside])
    shown_choices = [w.field.native.itemText(i) for i in range(w.field.native.count())]
    assert any(t.startswith("A02_f1 (segmented") for t in shown_choices)
    assert w.field.value == "A02_f1"  # the open field stayed open while the labels changed
    with open(out / "wells.csv") as f:
        assert {r["well"] for r in csv.DictReader(f)} == {"A01", "A02", "B03"}
    w.statistic.value = SEGMENTED
    assert w.grid.item(0, 1).text() == "1"

    other = tmp_path / "theirs"
    other.mkdir()
    theirs = np.ones((64, 80), np.uint8)
    tifffile.imwrite(other / "A01_s1_cell.tif", theirs)
    w.results.value = other
    w.open_plate()
    w.segment_plate()
    assert "left out" in w.status.value and "A01_s1" in w.status.value
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    np.testing.assert_array_equal(tifffile.imread(other / "A01_s1_cell.tif"), theirs)
    assert (other / "B03_s1_cell.tif").is_file()


def test_stop_ends_after_the_current_field_and_segmenting_again_goes_on(
    make_napari_viewer, tiny_bundle, tmp_path, qtbot
):
    src, _ = _plate(tmp_path)
    out = tmp_path / "fresh"
    viewer = make_napari_viewer()
    w = PlateWidget(viewer)
    w.folder.value, w.results.value, w.model.value = src, out, "tiny"
    w.open_plate()
    w.segment_plate()
    w.stop()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60000)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*_cell.tif")}
    assert len(first) < 5 and w.segment_button.enabled
    w.segment_plate()  # goes on: the fields done are not redone
    qtbot.waitUntil(lambda: w.worker is None, timeout=60000)
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("*_cell.tif")}
    assert len(again) == 5 and all(again[n] == t for n, t in first.items())
    assert w.progress.value == w.progress.max == 5


def test_an_ome_zarr_plate_in_the_dock_with_its_channels(
    make_napari_viewer, tiny_bundle, tmp_path, qtbot
):
    """An OME-Zarr HCS plate opens by its metadata; the chosen channel is shown and segmented,
    and its masks are those of that plane."""
    pytest.importorskip("ome_zarr")
    from tests.test_batch import _hcs_plate

    phase = phase_culture((64, 80), seed=3)[0]
    other = (phase[::-1] // 2).astype(phase.dtype)
    _hcs_plate(tmp_path / "plate.zarr", {("A", "1", 0): np.stack([phase, other])})
    viewer = make_napari_viewer()
    w = PlateWidget(viewer)
    w.folder.value, w.results.value, w.model.value = tmp_path / "plate.zarr", tmp_path / "r", "tiny"
    w.open_plate()
    assert "ome-zarr: 1 wells, 1 fields" in w.status.value
    assert set(w.channel.choices) == {"phase", "dapi"}
    w.channel.value = "phase"
    w.field.value = "A01_f1"
    np.testing.assert_array_equal(viewer.layers["A01_f1"].data, phase)
    w.segment_plate()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60000)
    assert (tmp_path / "r" / "A01_f1_cell.tif").is_file()
    ref = tmp_path / "ref"
    ref.mkdir()
    tifffile.imwrite(ref / "A01_s1.tif", phase)
    assert (
        main(
            [
                "segment",
                str(ref),
                "--out",
                str(tmp_path / "refout"),
                "--model",
                "tiny",
                "--quiet",
                "--diameter",
                "auto",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "r" / "A01_f1_cell.tif"),
        tifffile.imread(tmp_path / "refout" / "A01_s1_cell.tif"),
    )
    w.channel.value = "dapi"  # the open field now shows the other plane
    np.testing.assert_array_equal(viewer.layers["A01_f1"].data, other)


def test_the_plate_is_cut_into_objects_at_the_segment_docks_splitting(
    make_napari_viewer, culture_sample, tmp_path, qtbot
):
    """The user sets a class's splitting on one field in the Segment dock; the Plate dock of
    the same viewer segments every field with it."""
    from pathlib import Path

    from napari_cultureseg._widgets.segment import SegmentWidget
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.scale import choose_zoom
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    src, out = tmp_path / "plate", tmp_path / "results"
    src.mkdir()
    c = culture_sample
    images = {"A01_s1": c, "B02_s1": np.block([[c, c[:, ::-1]], [c[::-1], c.T]])}
    for name, img in images.items():
        tifffile.imwrite(src / f"{name}.tif", img)
    viewer = make_napari_viewer()
    seg_dock = SegmentWidget(viewer)
    seg_dock.model.reset_choices()
    seg_dock.model.value = "phase-cells"
    viewer.add_image(images["A01_s1"], name="A01_s1")
    seg_dock.image.reset_choices()
    seg_dock.start()
    qtbot.waitUntil(lambda: seg_dock.worker is None, timeout=60000)
    seg_dock._splitting["cell"].value = 0.6
    assert seg_dock.session.splitting == {"phase-cells": {"cell": 0.6}}
    qtbot.waitUntil(lambda: seg_dock.counter is None, timeout=60000)

    w = PlateWidget(viewer)
    w.folder.value, w.results.value, w.model.value = src, out, "phase-cells"
    w.open_plate()
    w.segment_plate()
    assert "splitting as in the Segment dock: cell 0.6" in w.status.value
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    bundle = load_bundle("phase-cells")
    changed = 0
    for name, img in images.items():
        zoom, _ = choose_zoom(bundle, img, diameter="auto", path=Path(src / f"{name}.tif"))
        seg = run_to_end(segment(bundle, img, zoom=zoom))
        got = tifffile.imread(out / f"{name}_cell_instances.tif")
        np.testing.assert_array_equal(got, seg.with_seeds({"cell": 0.6}).instances("cell"))
        changed += not np.array_equal(got, seg.instances("cell"))
    assert changed  # the model's own splitting would have cut them otherwise


def test_the_plate_docks_test_time_augmentation_starts_at_the_models_and_is_used(
    make_napari_viewer, culture_sample, tmp_path, qtbot
):
    """phase-cells runs 8 flipped copies by default; a user in a hurry turns it off for the
    plate, and the fields are segmented with one copy."""
    from pathlib import Path

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.scale import choose_zoom
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    src, out = tmp_path / "plate", tmp_path / "results"
    src.mkdir()
    tifffile.imwrite(src / "A01_s1.tif", culture_sample)
    w = PlateWidget(make_napari_viewer())
    w.model.value = "brightfield-nucleus-cell"
    assert w.tta.value == load_bundle("brightfield-nucleus-cell").config.tta == 1
    w.model.value = "phase-cells"
    assert w.tta.value == load_bundle("phase-cells").config.tta == 8
    w.tta.value = 1
    w.folder.value, w.results.value = src, out
    w.open_plate()
    w.segment_plate()
    assert "test-time augmentation" not in w.status.value
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    bundle = load_bundle("phase-cells")
    zoom, _ = choose_zoom(bundle, culture_sample, diameter="auto", path=Path(src / "A01_s1.tif"))
    got = tifffile.imread(out / "A01_s1_cell.tif") > 0
    one, eight = (
        run_to_end(segment(bundle, culture_sample, zoom=zoom, tta=n)).masks()["cell"]
        for n in (1, 8)
    )
    np.testing.assert_array_equal(got, one)
    assert not np.array_equal(got, eight)  # the model's own 8 copies draw other outlines
    # back to the model's own: the status says what it costs
    w.tta.value = 8
    w.results.value = tmp_path / "results8"
    w.segment_plate()
    assert "8 flipped copies of each (test-time augmentation)" in w.status.value
    qtbot.waitUntil(lambda: w.worker is None, timeout=120000)
    got8 = tifffile.imread(tmp_path / "results8" / "A01_s1_cell.tif") > 0
    np.testing.assert_array_equal(got8, eight)
