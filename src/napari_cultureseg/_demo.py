"""``cultureseg demo``: napari with the Segment widget docked on a sample image.

With ``screenshot=PATH`` it segments, saves a screenshot of the whole window
and exits, so the main job can be checked headless (under Xvfb).
"""

from __future__ import annotations

import sys
from pathlib import Path

SAMPLES = {
    "synthetic": "synthetic_culture",
    "cell": "phase_cells",
    "tumour": "tumour_culture",
    "spheroid": "spheroid_well",
}
"""``--sample`` names and the npe2 sample keys; each sample's image layer names its model."""


def _open_sample(viewer, sample: str):
    if sample in SAMPLES:
        viewer.open_sample("napari-cultureseg", SAMPLES[sample])
    else:
        import os

        sample = str(Path(os.environ.get("CULTURESEG_CWD") or Path.cwd()) / sample)
        if not Path(sample).is_file():
            raise SystemExit(
                f"--sample {sample}: no such file, and not one of the samples {', '.join(SAMPLES)}"
            )
        viewer.open(sample, plugin="napari-cultureseg")
    from napari.layers import Image

    return next(layer for layer in viewer.layers if isinstance(layer, Image))


def has_display() -> bool:
    """Whether Qt can open a window here (an X or Wayland display, or not Linux)."""
    import os

    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def rerun_under_xvfb(argv: list[str]) -> int:
    """Run ``cultureseg`` again inside ``xvfb-run`` (a virtual screen), or say how to get one."""
    import os
    import shutil
    import subprocess

    if os.environ.get("CULTURESEG_UNDER_XVFB") or not shutil.which("xvfb-run"):
        print(
            "error: no display to open napari on. Run it on a desktop, or install a virtual "
            "screen (Debian/Ubuntu: sudo apt-get install xvfb libgl1-mesa-dri) and run "
            "`xvfb-run -a cultureseg demo --screenshot demo.png`; scripts/demo.sh does both.",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "CULTURESEG_UNDER_XVFB": "1"}
    cmd = [
        "xvfb-run",
        "-a",
        "-s",
        "-screen 0 1280x1024x24",
        sys.executable,
        "-m",
        "napari_cultureseg.cli",
        *argv,
    ]
    return subprocess.call(cmd, env=env)


def main(
    *, sample: str = "synthetic", model: str | None = None, screenshot: str | None = None
) -> int:
    import napari
    from qtpy.QtCore import QTimer

    if screenshot is not None:  # relative to where the user ran the command
        import os

        screenshot = str(Path(os.environ.get("CULTURESEG_CWD") or Path.cwd()) / screenshot)
    viewer = napari.Viewer(title="napari-cultureseg")
    viewer.window.resize(1280, 860)
    image = _open_sample(viewer, sample)
    for layer in list(viewer.layers):
        if layer is not image and layer.name.endswith("truth"):
            layer.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Segment")
    widget.image.value = image  # selects the sample's own model, when it names one
    if model:
        widget.model.value = model
    if screenshot is None:
        napari.run()
        return 0

    outcome = {"code": 1}

    def shoot():
        if widget.counter is not None:  # the objects are still being counted
            QTimer.singleShot(200, shoot)
            return
        if widget.result is not None:
            viewer.reset_view()
            out = Path(screenshot)
            out.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(out), canvas_only=False)
            print(f"screenshot written to {out}")
            outcome["code"] = 0
        else:
            print(f"segmentation failed: {widget.status.value}", file=sys.stderr)
        viewer.close()

    def go():
        try:
            widget.start()
        except Exception as exc:  # never leave a headless run hanging
            print(f"could not start segmenting: {exc!r}", file=sys.stderr)
            viewer.close()
            return
        if widget.worker is None:  # failed to start, or ran inline
            QTimer.singleShot(500, shoot)
        else:
            widget.worker.finished.connect(lambda: QTimer.singleShot(500, shoot))

    QTimer.singleShot(1000, go)
    napari.run()
    return outcome["code"]
