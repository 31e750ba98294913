"""bioimage.io packages: written, tested green by bioimageio.core, and read back identical."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from napari_cultureseg.cli import main
from napari_cultureseg.core.bundle_config import BundleError
from napari_cultureseg.core.bundles import Bundle, user_models_dir

pytest.importorskip("bioimageio.core")
torch = pytest.importorskip("torch")


def test_export_tests_green_and_import_gives_the_same_model(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "tiny.zip"
    assert main(["export", "tiny", str(out)]) == 0  # runs bioimageio.core's test_model
    assert "tested by bioimageio.core" in capsys.readouterr().out
    names = set(zipfile.ZipFile(out).namelist())
    assert {"rdf.yaml", "weights.onnx", "weights_torchscript.pt", "test_input.npy"} <= names
    assert not any(n.endswith((".pth", ".pkl")) for n in names), "no pickled weights"

    from bioimageio.core import test_model

    assert test_model(out).status == "passed"  # the written package, not only its description

    assert main(["import", str(out), "--name", "tiny-again"]) == 0
    back = Bundle.load(user_models_dir() / "tiny-again")
    x = np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32)
    np.testing.assert_array_equal(back.predictor("cpu")(x), tiny_bundle.predictor("cpu")(x))
    assert main(["export", "tiny", str(out)]) == 2, "an existing file is not overwritten"


def test_a_package_from_elsewhere_is_refused_with_the_reason(tmp_path, cultureseg_home):
    from napari_cultureseg.core.bioimageio import import_package

    foreign = tmp_path / "other.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("rdf.yaml", "format_version: 0.5.4\ntype: model\n")
        z.writestr("weights.onnx", b"\x00")
    with pytest.raises(BundleError, match="only packages exported by `cultureseg export`"):
        import_package(foreign, tmp_path / "x")
    (tmp_path / "not.zip").write_text("hello")
    with pytest.raises(BundleError, match="not a bioimage.io package"):
        import_package(tmp_path / "not.zip", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
