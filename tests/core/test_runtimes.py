"""ONNX Runtime on the CPU: same probabilities as torch, a cache that checks what it runs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec
from napari_cultureseg.core.bundles import Bundle
from napari_cultureseg.core.runtimes import network_key, onnx_file, predictor_for
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.tiling import run_to_end

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("CULTURESEG_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    cfg = BundleConfig(
        name="tiny",
        architecture="unet",
        classes=(ClassSpec("cell", separate="distance"), ClassSpec("nucleus")),
        params={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        tile=64,
        overlap=0.25,
    )
    return Bundle(cfg)


def test_onnx_gives_torchs_probabilities_for_any_batch_and_tile(bundle):
    run = predictor_for(bundle, "cpu", "onnx")
    assert run.name == "onnx" and not run.note
    torch_run = bundle.predictor("cpu")
    rng = np.random.default_rng(1)
    for shape in [(1, 1, 64, 64), (3, 1, 96, 160)]:
        x = rng.random(shape, dtype=np.float32)
        out = run.predict(x)
        assert out.shape == (shape[0], bundle.config.n_outputs, *shape[2:])
        np.testing.assert_allclose(out, torch_run(x), atol=1e-4)
    image = rng.integers(0, 4000, (150, 170)).astype(np.uint16)
    a = run_to_end(segment(bundle, image, device="cpu", runtime="onnx"))
    b = run_to_end(segment(bundle, image, device="cpu", runtime="torch"))
    np.testing.assert_allclose(a.raw, b.raw, atol=1e-4)


def test_the_export_is_cached_by_the_weights_and_a_changed_file_is_never_run(bundle, tmp_path):
    folder = tmp_path / "cache"
    path = onnx_file(bundle, folder=folder)
    assert network_key(bundle)[:20] in path.name and path.with_suffix(".json").is_file()
    stamp = path.stat().st_mtime_ns
    assert onnx_file(bundle, folder=folder) == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # someone changed it
    again = onnx_file(bundle, folder=folder)
    assert again == path and path.stat().st_mtime_ns != stamp, "re-exported, not run"
    state = {k: v.clone() for k, v in bundle.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] += 0.5  # other weights: another key, another file
    assert onnx_file(Bundle(bundle.config, state=state), folder=folder) != path


def test_onnx_falls_back_to_torch_and_says_why(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    run = predictor_for(bundle, "cpu", "onnx")
    assert run.name == "torch" and "pip install onnxruntime" in run.note
    auto = predictor_for(bundle, "cpu", "auto")
    assert auto.name == "torch" and not auto.note, "auto takes torch without a word"
    with pytest.raises(ValueError, match="runtime must be one of"):
        predictor_for(bundle, "cpu", "tensorrt")
    gen = segment(bundle, np.zeros((64, 64), np.float32), device="cpu", runtime="onnx")
    assert "onnxruntime is not installed" in next(gen).note
    monkeypatch.undo()
    assert predictor_for(bundle, "cpu").name == "onnx", "auto: ONNX Runtime on a CPU"
