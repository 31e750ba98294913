"""Saving class Labels layers from napari: one TIFF per class, never over a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_cultureseg._writer import WriteError, write_ome_zarr


def _layers(viewer):
    cell = np.zeros((32, 40), np.uint8)
    cell[4:20, 5:30] = 1
    objects = np.zeros((32, 40), np.uint16)
    objects[4:20, 5:15], objects[4:20, 15:30] = 1, 300  # labels above 255 stay labels
    viewer.add_labels(
        cell,
        name="A01.tif · cell",
        metadata={"cultureseg": {"class": "cell", "colour": "#39ff14"}},
    )
    viewer.add_labels(objects, name="A01.tif · cell · objects")
    return cell, objects


def test_the_class_layers_are_saved_one_tiff_each(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    cell, objects = _layers(viewer)
    viewer.layers.select_all()
    written = viewer.layers.save(
        str(tmp_path / "A01.tif"), selected=True, plugin="napari-cultureseg"
    )
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == ["A01_cell.tif", "A01_cell_objects.tif"]
    back = tifffile.imread(tmp_path / "A01_cell.tif")
    np.testing.assert_array_equal(back, cell)
    with tifffile.TiffFile(tmp_path / "A01_cell.tif") as tif:
        desc = json.loads(tif.pages[0].description)
    assert desc["class"] == "cell" and desc["colour"] == "#39ff14"
    labels = tifffile.imread(tmp_path / "A01_cell_objects.tif")
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 1, 300}
    # a second save would replace files napari did not ask about: refused, nothing written
    before = (tmp_path / "A01_cell.tif").read_bytes()
    with pytest.raises(WriteError, match="A01_cell.tif.*exist.*nothing was written"):
        viewer.layers.save(str(tmp_path / "A01.tif"), selected=True, plugin="napari-cultureseg")
    assert (tmp_path / "A01_cell.tif").read_bytes() == before
    assert len(viewer.layers) == 2  # the viewer and its layers are untouched


def test_an_image_and_its_class_layers_are_saved_as_one_ome_zarr(make_napari_viewer, tmp_path):
    pytest.importorskip("ome_zarr")
    from napari_cultureseg.core.omezarr import read_labels

    viewer = make_napari_viewer()
    image = np.arange(32 * 40, dtype=np.uint16).reshape(32, 40)
    viewer.add_image(image, name="A01.tif")
    cell, objects = _layers(viewer)
    viewer.layers.select_all()
    target = tmp_path / "A01.ome.zarr"
    written = viewer.layers.save(str(target), selected=True, plugin="napari-cultureseg")
    assert written == [str(target)]
    labels = read_labels(target)
    assert sorted(labels) == ["cell", "cell_objects"]
    np.testing.assert_array_equal(labels["cell"], cell)
    np.testing.assert_array_equal(labels["cell_objects"], objects)
    import zarr

    meta = dict(zarr.open_group(str(target / "labels" / "cell"), mode="r").attrs)
    assert meta["image-label"]["colors"] == [{"label-value": 1, "rgba": [57, 255, 20, 255]}]
    # never over an existing one; the viewer keeps its layers
    with pytest.raises(WriteError, match="exists already"):
        viewer.layers.save(str(target), selected=True, plugin="napari-cultureseg")
    # without its image, napari does not offer this writer: nothing is written
    viewer.layers.selection = {viewer.layers["A01.tif · cell"]}
    with pytest.warns(UserWarning, match="not a valid writer"):
        viewer.layers.save(str(tmp_path / "B.ome.zarr"), selected=True, plugin="napari-cultureseg")
    assert len(viewer.layers) == 3 and not (tmp_path / "B.ome.zarr").exists()
    # called directly (a script) with two images: refused, saying what to select
    two = [(image, {"name": "a"}, "image"), (image, {"name": "b"}, "image")]
    with pytest.raises(WriteError, match="select one image"):
        write_ome_zarr(str(tmp_path / "C.ome.zarr"), [*two, (cell, {"name": "c"}, "labels")])
    assert not (tmp_path / "C.ome.zarr").exists()
