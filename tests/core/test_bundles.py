import json

import numpy as np
import pytest
import torch

from napari_cultureseg.core.bundle_config import BundleError
from napari_cultureseg.core.bundles import (
    Bundle,
    find_bundle,
    list_bundles,
    load_bundle,
    user_models_dir,
)
from napari_cultureseg.core.device import resolve_device
from napari_cultureseg.core.nets import architectures, create_model

from ..conftest import TINY_PARAMS, tiny_config


def _forward(net, x):
    with torch.inference_mode():
        return net(x)


@pytest.mark.parametrize("arch", ["unet", "per-class-unets"])
def test_round_trip_keeps_state_and_outputs_identical(tmp_path, arch):
    torch.manual_seed(1)
    bundle = Bundle(tiny_config(architecture=arch, classes=("a", "b", "c")))
    net = bundle.build()
    x = torch.randn(2, 1, 64, 64)
    path = bundle.save(tmp_path / "m")
    loaded = Bundle.load(path)
    net2 = loaded.build()
    sd1, sd2 = net.state_dict(), net2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    assert torch.equal(_forward(net, x), _forward(net2, x))
    assert loaded.config == bundle.config
    assert _forward(net2, x).shape == (2, 3, 64, 64)


def test_float16_storage_is_close_and_half_the_size(tmp_path):
    torch.manual_seed(2)
    b32 = Bundle(tiny_config())
    b16 = b32.with_config(storage_dtype="float16")
    p32, p16 = b32.save(tmp_path / "f32"), b16.save(tmp_path / "f16")
    s32, s16 = (p / "weights.safetensors" for p in (p32, p16))
    assert s16.stat().st_size < 0.6 * s32.stat().st_size
    x = torch.randn(1, 1, 64, 64)
    y32 = torch.sigmoid(_forward(Bundle.load(p32).build(), x))
    y16 = torch.sigmoid(_forward(Bundle.load(p16).build(), x))
    assert (y32 - y16).abs().max() < 1e-2


def test_per_class_unets_are_independent_binary_networks():
    net = create_model("per-class-unets", in_channels=1, classes=3, **TINY_PARAMS)
    assert len(net.nets) == 3
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        full = net(x)
        # the class logit is the difference of the two softmax scores of that class's net
        o = net.nets[1](x)
        assert torch.allclose(torch.sigmoid(full[:, 1]), torch.softmax(o, 1)[:, 1], atol=1e-6)


def test_loading_never_unpickles_and_refuses_pickles(tmp_path):
    bundle = Bundle(tiny_config())
    path = bundle.save(tmp_path / "m")
    # a stranger's pickle renamed as weights must not be executed, only refused
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    (path / "weights.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(BundleError, match="safetensors"):
        Bundle.load(path)
    assert not marker.exists()


def test_broken_bundles_are_explained(tmp_path):
    with pytest.raises(BundleError, match="no config.json"):
        Bundle.load(tmp_path)
    path = Bundle(tiny_config()).save(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["params"]["decoder_channels"] = [64, 32, 16]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="do not fit"):
        Bundle.load(path).build()
    (path / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(path)
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("resnet-9000", in_channels=1, classes=1)
    assert {"unet", "per-class-unets"} <= set(architectures())


def test_save_is_atomic_and_does_not_clobber(tmp_path):
    bundle = Bundle(tiny_config())
    path = bundle.save(tmp_path / "m")
    with pytest.raises(BundleError, match="exists"):
        bundle.save(path)
    bundle.with_config(description="v2").save(path, overwrite=True)
    assert Bundle.load(path).config.description == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folders left

    broken = Bundle(tiny_config())
    broken._state = {"w": "not a tensor"}  # makes writing fail half-way
    with pytest.raises(AttributeError):
        broken.save(tmp_path / "half")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_user_models_are_found_by_name_and_cached(tiny_bundle):
    assert "tiny" in list_bundles()
    assert find_bundle("tiny") == user_models_dir() / "tiny"
    assert load_bundle("tiny") is load_bundle("tiny")
    with pytest.raises(BundleError, match="no model named 'nope'"):
        find_bundle("nope")


def test_predictor_gives_probabilities(tiny_bundle):
    out = tiny_bundle.predictor("cpu")(
        np.random.default_rng(0).random((2, 1, 64, 64)).astype(np.float32)
    )
    assert out.shape == (2, 2, 64, 64) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


def test_device_choice():
    assert resolve_device("auto") in ("cuda", "mps", "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available.*auto"):
            resolve_device("cuda")
