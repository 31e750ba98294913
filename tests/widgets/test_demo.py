"""README command 1 with --screenshot: napari, the Segment widget, the default model, layers."""

import os
import subprocess
import sys

import pytest

from napari_cultureseg.core.bundles import DEFAULT_MODEL, list_bundles


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")
def test_demo_segments_and_writes_a_screenshot(tmp_path):
    assert DEFAULT_MODEL in list_bundles(), "the default model must ship with the package"
    shot = tmp_path / "shots" / "demo.png"
    r = subprocess.run(  # a relative path: written where the user is, not in the package
        [sys.executable, "-m", "napari_cultureseg.cli", "demo", "--screenshot", "shots/demo.png"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    import imageio.v3 as iio

    img = iio.imread(shot)
    assert img.ndim == 3 and img.shape[0] > 500 and img.shape[1] > 800
    # the window is not blank: the canvas shows the image and coloured class layers
    assert img[..., :3].std() > 20
    assert "screenshot written" in r.stdout


def test_demo_without_a_display_says_how_to_get_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["CULTURESEG_UNDER_XVFB"] = "1"  # as if xvfb-run had already been tried
    r = subprocess.run(
        [sys.executable, "-m", "napari_cultureseg.cli", "demo", "--screenshot", "x.png"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "xvfb" in r.stderr and "Traceback" not in r.stderr


def test_each_sample_selects_the_model_that_fits_it(make_napari_viewer):
    from napari_cultureseg._widgets.segment import SegmentWidget

    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    for key, model in (
        ("tumour_culture", "culture-multilabel"),
        ("spheroid_well", "spheroid-multiscale"),
        ("synthetic_culture", "phase-cells"),
    ):
        viewer.layers.clear()
        viewer.open_sample("napari-cultureseg", key)
        w.image.reset_choices()
        w.image.value = viewer.layers[0]
        assert w.model.value == model, key
