"""Shared fixtures: a private model home, a tiny real network, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

# keep triton out before anything imports torch (see napari_cultureseg/_widgets/__init__.py):
# the GUI tests share this process with an OpenGL context on Mesa.
import napari_cultureseg._widgets  # noqa: F401

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def cultureseg_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty user-model folder; nothing is written under ~."""
    home = tmp_path_factory.mktemp("cultureseg_home")
    monkeypatch.setenv("CULTURESEG_HOME", str(home))
    return home


TINY_PARAMS = {"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [32, 16, 8]}


def tiny_config(name="tiny", classes=("cell", "debris"), **kw):
    from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec

    colours = ["#39ff14", "#ff00ff", "#30b0ff", "#ffd040"]
    return BundleConfig(
        name=name,
        architecture=kw.pop("architecture", "unet"),
        classes=tuple(
            ClassSpec(c, colour=colours[i % 4], instances=(i == 0), min_size=0)
            for i, c in enumerate(classes)
        ),
        params=kw.pop("params", TINY_PARAMS),
        tile=kw.pop("tile", 128),
        **kw,
    )


@pytest.fixture
def tiny_bundle(cultureseg_home):
    """A small real U-Net (random weights, seeded) installed as user model ``tiny``."""
    import torch

    from napari_cultureseg.core.bundles import Bundle, user_models_dir

    torch.manual_seed(0)
    bundle = Bundle(tiny_config())
    bundle.save(user_models_dir() / "tiny")
    return bundle


@pytest.fixture
def culture_sample():
    """The plugin's synthetic phase-contrast sample (256², in the repository): the bundled
    ``phase-cells`` cuts its touching cells into 5, 5 or 6 objects at splitting 0.3, 0.5
    (its own) or 0.7 when segmented at the model's cell size (diameter 40)."""
    import tifffile

    return tifffile.imread(
        Path(__file__).resolve().parents[1] / "sample_data" / "synthetic_culture.tif"
    )


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: on a busy 2-core machine two can be 100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the public data folder {SHARED_DATA} (absent on a fresh clone)")
    return SHARED_DATA
