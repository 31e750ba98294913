"""Synthetic training samples, synthetic data entries in training YAMLs, the six-class configs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec
from napari_cultureseg.core.model_input import InputSpec, to_model_input
from napari_cultureseg.core.nets import create_model
from napari_cultureseg.core.synth.culture import class_specs, culture
from napari_cultureseg.core.synth.data import (
    TEST_SEEDS,
    parse_name,
    sample_name,
    seed_range,
    synthetic_samples,
)
from napari_cultureseg.core.synth.spheroid import spheroid_well
from napari_cultureseg.core.training import (
    TrainConfig,
    fine_tune,
    model_config,
    prepare_from_config,
    run_training,
    train_config,
)

CONFIGS = Path(__file__).parents[2] / "configs"
SMALL = (96, 128)
NAMES = [c.name for c in class_specs()]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- samples


def test_culture_samples_are_deterministic_and_their_targets_are_the_masks():
    a = synthetic_samples("culture", [3, 4], classes=class_specs(), shape=SMALL)
    b = synthetic_samples("culture", [3, 4], classes=class_specs(), shape=SMALL)
    assert [s.name for s in a] == ["culture-s0003", "culture-s0004"]
    for s, t in zip(a, b, strict=True):
        assert np.array_equal(s.image, t.image) and np.array_equal(s.target, t.target)
    image, masks = culture(SMALL, seed=4, rgb=True)
    s = a[1]
    assert s.image.shape == (1, *SMALL) and s.target.shape == s.valid.shape == (6, *SMALL)
    assert np.array_equal(s.image, to_model_input(image, InputSpec()))
    for k, name in enumerate(NAMES):
        assert np.array_equal(s.target[k], masks[name]), name
    assert s.valid.all() and s.group == "culture"
    assert not np.array_equal(a[0].image, a[1].image)  # another seed, another image


def test_classes_the_generator_does_not_draw_are_unknown():
    s = synthetic_samples(
        "culture", [1], classes=["O", "nucleus"], shape=SMALL, spec=InputSpec(channels=3)
    )[0]
    assert s.image.shape == (3, *SMALL)
    assert s.valid[0].all() and not s.valid[1].any() and not s.target[1].any()
    assert np.array_equal(s.target[0], culture(SMALL, seed=1)[1]["O"])


def test_spheroid_samples_hold_the_well_mask():
    for kind in ("spheroid-easy", "spheroid-hard"):
        s = synthetic_samples(
            kind, [2], classes=[ClassSpec("spheroid")], shape=(64, 64), rgb=False
        )[0]
        image, mask = spheroid_well(64, seed=2, difficulty=kind.split("-")[1])
        assert s.name == f"{kind}-s0002" and parse_name(s.name) == (kind, 2)
        assert np.array_equal(s.target[0], mask) and np.array_equal(s.image, to_model_input(image))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "cultures"}, "unknown synthetic kind"),
        ({"kind": "spheroid-easy", "shape": (64, 96), "rgb": False}, "square"),
        ({"kind": "spheroid-easy", "shape": (64, 64)}, "rgb: false"),
        (
            {"kind": "spheroid-easy", "shape": (64, 64), "rgb": False, "classes": NAMES},
            "none of them",
        ),
    ],
)
def test_synthetic_samples_errors_say_what_to_do(kwargs, match):
    kw = {"kind": "culture", "classes": ["spheroid"], "shape": SMALL, "rgb": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        synthetic_samples(kw.pop("kind"), [0], **kw)


def test_seed_ranges_and_names():
    assert seed_range([0, 24]) == range(24)
    for bad in ([3], [5, 5], [-1, 2], [0.0, 4], "0-4", [True, 3]):
        with pytest.raises(ValueError, match=r"\[start, stop\]"):
            seed_range(bad)
    assert parse_name(sample_name("culture", 1234)) == ("culture", 1234)
    assert parse_name("set01") is None and parse_name("cells-s0001") is None


# ---------------------------------------------------------------- YAML data entries


def _config(tmp_path: Path, data: list[dict], **extra) -> Path:
    y = {
        "name": "tiny-culture",
        "architecture": "unet",
        "params": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        "classes": [{"name": c.name, "colour": c.colour} for c in class_specs()],
        "input": {"channels": 1},
        "data": data,
        "training": {"steps": 2, "patch_size": 64},
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(y))
    return path


def _entry(seeds, use, **kw):
    return {"synthetic": "culture", "seeds": seeds, "shape": list(SMALL), "use": use, **kw}


def test_prepare_from_config_loads_synthetic_entries_with_disjoint_seeds(tmp_path):
    path = _config(tmp_path, [_entry([0, 3], "train"), _entry([3, 5], "val")])
    r = prepare_from_config(path)
    train, val = r.train, r.val
    assert [s.name for s in train] == [sample_name("culture", i) for i in range(3)]
    assert [s.name for s in val] == [sample_name("culture", i) for i in (3, 4)]
    assert train[0].target.shape == (6, *SMALL) and r.model.classes[2].name == "IP"
    assert "synthetic culture seeds 0-2" in r.training.data_description
    # split: one pool of seeds divided by the config's split section, never both ways
    path = _config(tmp_path, [_entry([10, 20], "split")], split={"val_fraction": 0.3})
    r = prepare_from_config(path)
    train, val = r.train, r.val
    assert len(train) == 7 and len(val) == 3
    assert not {s.name for s in train} & {s.name for s in val}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([_entry([0, 3], "train"), _entry([2, 4], "val")], "both training and validation"),
        ([_entry([0, 2], "train"), _entry([1000, 1001], "val")], "reserved for held-out tests"),
        ([_entry([0, 2], "train", seed=4)], "unknown key"),
        ([_entry([0, 2], "tune")], "use must be"),
        ([{"use": "train"}], "folder: <path> or synthetic"),
    ],
)
def test_prepare_from_config_refuses_bad_synthetic_entries(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        prepare_from_config(_config(tmp_path, data))


# ---------------------------------------------------------------- the two culture configs


@pytest.mark.parametrize("name", ["culture-multilabel", "culture-per-class"])
def test_culture_configs_are_valid(name):
    y = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert y["name"] == name
    classes = tuple(ClassSpec(**c) for c in y["classes"])
    assert [(c.name, c.colour) for c in classes] == [(c.name, c.colour) for c in class_specs()]
    spec = InputSpec.from_dict(y["input"])
    cfg = train_config(y)
    assert model_config(y).input == spec
    assert cfg.patch_size == 512 and y["tile"] % 32 == 0
    assert {"source", "licence", "attribution", "intended_use", "limitations"} <= set(y["card"])
    # seeds: train and validation apart, neither among the reserved test seeds
    seeds = {e["use"]: set(seed_range(e["seeds"])) for e in y["data"]}
    assert set(seeds) == {"train", "val"} and not seeds["train"] & seeds["val"]
    assert not (seeds["train"] | seeds["val"]) & set(TEST_SEEDS)
    torch.manual_seed(0)
    net = create_model(
        y["architecture"], in_channels=spec.channels, classes=len(classes), **y["params"]
    ).eval()
    with torch.inference_mode():
        out = net(torch.rand(1, spec.channels, 64, 64))
    assert out.shape == (1, 6, 64, 64) and torch.isfinite(out).all()


def test_per_class_unets_learn_tiny_synthetic_cultures():
    train = synthetic_samples("culture", range(4), classes=class_specs(), shape=SMALL)
    model = BundleConfig(
        name="tiny-per-class",
        architecture="per-class-unets",
        classes=class_specs(),
        params={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        tile=64,
    )
    config = TrainConfig(
        steps=30,
        batch_size=2,
        patch_size=64,
        lr=3e-3,
        weight_decay=1e-3,
        class_weighting=True,
        positive_fraction=0.5,
        negative_fraction=0.5,
        augment=False,
        threads=1,
    )
    gen = fine_tune(model, train, [], config)
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            trained = stop.value
            break
    assert len(reports) == 30 and trained.config.architecture == "per-class-unets"
    losses = [r.loss for r in reports]
    # weighted cross entropy of six 2-way softmaxes starts near ln 2
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert trained.config.lineage["training"]["per_class_batches"] is True


def test_per_class_unets_each_learn_from_batches_of_their_own_class(monkeypatch):
    from napari_cultureseg.core import patches

    asked = []
    batch = patches.PatchSampler.batch

    def spy(self, n, for_class=None):
        asked.append(for_class)
        return batch(self, n, for_class)

    monkeypatch.setattr(patches.PatchSampler, "batch", spy)
    train = synthetic_samples("culture", range(2), classes=class_specs(), shape=SMALL)
    model = BundleConfig(
        name="tiny-per-class",
        architecture="per-class-unets",
        classes=class_specs(),
        params={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        tile=64,
    )
    config = TrainConfig(steps=2, batch_size=1, patch_size=64, threads=1, augment=False)
    run_training(model, config, train, [])
    assert asked == [0, 1, 2, 3, 4, 5] * 2  # every step: one batch per class's network
    asked.clear()
    run_training(model, replace(config, per_class_batches=False), train, [])
    assert asked == [None, None]
