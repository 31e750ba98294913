"""README command 1 with --screenshot: napari, the Segment widget, the default model, layers."""

import os
import subprocess
import sys

import pytest

from napari_cultureseg.core.bundles import DEFAULT_MODEL, list_bundles


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")
def test_demo_segments_and_writes_a_screenshot(tmp_path):
    assert DEFAULT_MODEL in list_bundles(), "the default model must ship with the package"
    shot = tmp_path / "demo.png"
    r = subprocess.run(
        [sys.executable, "-m", "napari_cultureseg.cli", "demo", "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    import imageio.v3 as iio

    img = iio.imread(shot)
    assert img.ndim == 3 and img.shape[0] > 500 and img.shape[1] > 800
    # the window is not blank: the canvas shows the image and coloured class layers
    assert img[..., :3].std() > 20
    assert "screenshot written" in r.stdout
