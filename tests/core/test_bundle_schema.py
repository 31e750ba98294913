"""A stranger's config.json is checked on load: one line says which key is wrong."""

from __future__ import annotations

import json

import pytest

from napari_cultureseg.cli import main
from napari_cultureseg.core.bundle_config import BundleError
from napari_cultureseg.core.bundles import Bundle, user_models_dir


def _set(d: dict, path: str, value):
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    if value is _DELETE:
        del d[last]
    elif isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value


_DELETE = object()

BAD = [
    ("classes.0.threshold", -1, "threshold"),
    ("classes.0.threshold", float("nan"), "threshold"),
    ("classes.0.threshold", "high", "threshold"),
    ("classes.0.name", "x/../../evil", "class name"),
    ("classes.1.name", "cell", "unique"),
    ("classes.0.min_size", -5, "min_size"),
    ("classes.0.separate", "magic", "separate"),
    ("classes.0.colour", "red; rm -rf", "colour"),
    ("tile", 0, "tile"),
    ("tile", 100000, "tile"),
    ("tile", 100, "tile"),
    ("overlap", 2.0, "overlap"),
    ("tta", 3, "tta"),
    ("params.extra", 1, "unknown key"),
    ("params.encoder", "tu-hf-hub:timm/resnet18.a1_in1k", "hub"),
    ("architecture", "transformer-xl", "architecture"),
    ("input.channels", 7, "channels"),
    ("input.normalisation.low", 99.9, "percentiles"),
    ("name", "../../x", "model name"),
    ("classes", [], "empty"),
    ("scale", {"diameter": -3, "reference": "cell"}, "scale.diameter"),
    ("scale", {"diameter": 20, "reference": "mitochondria"}, "scale.reference"),
    ("scale", {"diameter": 20, "reference": "cell", "estimator": "guess"}, "scale.estimator"),
    ("scale", {"diameter": 20, "reference": "cell", "bias": 0}, "scale.bias"),
]


@pytest.mark.parametrize(("key", "value", "match"), BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_config_values_are_refused_with_the_key(tiny_bundle, key, value, match):
    path = user_models_dir() / "tiny"
    d = json.loads((path / "config.json").read_text())
    _set(d, key, value)
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match=match) as info:
        Bundle.load(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "{not json", '"a string"', "null"])
def test_a_config_that_is_not_an_object_is_refused(tiny_bundle, text):
    path = user_models_dir() / "tiny"
    (path / "config.json").write_text(text)
    with pytest.raises(BundleError):
        Bundle.load(path)


def test_models_lists_the_good_bundles_and_reports_the_bad(tiny_bundle, capsys):
    bad = user_models_dir() / "broken"
    bad.mkdir()
    (bad / "config.json").write_text("[]")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "broken: UNREADABLE" in out and "tiny" in out and "phase-cells" in out
