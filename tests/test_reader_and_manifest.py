import importlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_cultureseg
from napari_cultureseg._reader import get_reader
from napari_cultureseg.core.images import ImageError


def test_manifest_is_valid_and_every_python_name_imports():
    from npe2 import PluginManifest

    path = Path(napari_cultureseg.__file__).parent / "napari.yaml"
    manifest = PluginManifest.from_file(path)
    manifest.validate_imports()
    names = [c.python_name for c in manifest.contributions.commands]
    assert len(names) >= 4
    for name in names:
        module, attr = name.split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_root_manifest_is_the_shipped_one():
    root = Path(__file__).resolve().parents[1] / "napari.yaml"
    shipped = Path(napari_cultureseg.__file__).parent / "napari.yaml"
    assert root.read_text() == shipped.read_text()


def test_installed_plugin_is_discovered_by_npe2():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert "napari-cultureseg" in pm.iter_manifests() or pm.get_manifest("napari-cultureseg")


def test_reader_reads_images_and_declines_others(tmp_path):
    rgb = np.zeros((30, 40, 3), np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", rgb, photometric="rgb")
    reader = get_reader(str(tmp_path / "a.tif"))
    [(data, meta, kind)] = reader(str(tmp_path / "a.tif"))
    assert kind == "image" and meta["rgb"] and data.shape == (30, 40, 3)
    assert get_reader(str(tmp_path / "a.csv")) is None
    stack = np.zeros((4, 30, 40), np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    [(data, meta, _)] = get_reader(str(tmp_path / "s.tif"))(str(tmp_path / "s.tif"))
    assert data.shape == (4, 30, 40) and not meta["rgb"]  # the user picks the plane
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(ImageError, match="could not be read"):
        get_reader(str(tmp_path / "bad.png"))(str(tmp_path / "bad.png"))


def test_sample_data():
    from napari_cultureseg._sample_data import phase_cells, synthetic_culture

    [(cell, _, kind)] = phase_cells()
    assert kind == "image" and cell.ndim == 2 and min(cell.shape) > 256
    (img, m1, k1), (lab, m2, k2) = synthetic_culture()
    assert (k1, k2) == ("image", "labels") and img.shape == lab.shape and lab.max() > 5


def test_the_committed_sample_files_are_what_their_script_makes(tmp_path):
    """sample_data/make_samples.py regenerates the repository's small samples and their
    truth pixel for pixel (tests and the README's screenshots rely on them)."""
    import importlib.util

    import imageio.v3 as iio

    here = Path(__file__).resolve().parents[1] / "sample_data"
    spec = importlib.util.spec_from_file_location("make_samples", here / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    committed = sorted(p.name for p in here.glob("*.[pt][ni][gf]"))
    assert sorted(p.name for p in tmp_path.iterdir()) == committed and len(committed) == 11
    for name in committed:
        read = tifffile.imread if name.endswith(".tif") else iio.imread
        np.testing.assert_array_equal(read(tmp_path / name), read(here / name), err_msg=name)


def test_synthetic_tumour_culture_and_spheroid_samples_open_in_napari(make_napari_viewer):
    from napari_cultureseg._sample_data import spheroid_well, tumour_culture
    from napari_cultureseg.core.synth.culture import CLASSES

    layers = tumour_culture()
    assert [k for _, _, k in layers] == ["image"] + ["labels"] * 6
    (img, meta, _), *truth = layers
    assert img.shape == (1040, 1392, 3) and meta["rgb"]
    assert all(m.shape == img.shape[:2] and m.any() for m, _, _ in truth)
    p = next(m for m, meta, _ in truth if "· P " in meta["name"])
    s = next(m for m, meta, _ in truth if "· S " in meta["name"])
    assert (p & s).any()  # cells sit on vessels: the classes overlap
    (w, _, _), (mask, _, _) = spheroid_well()
    assert w.shape == mask.shape == (1080, 1080) and 0 < mask.mean() < 0.5
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cultureseg", "tumour_culture")
    assert len(viewer.layers) == 7
    colour = dict((n, c) for n, c, _ in CLASSES)["P"]
    got = viewer.layers["tumour culture · P (truth)"].colormap.map(np.array([1]))[0][:3]
    np.testing.assert_allclose(
        got, [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)], atol=0.01
    )
