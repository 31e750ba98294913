"""``cultureseg demo``: napari with the Segment widget docked on a sample image.

With ``screenshot=PATH`` it segments, saves a screenshot of the whole window
and exits, so the main job can be checked headless (under Xvfb).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _open_sample(viewer, sample: str):
    if sample in ("cell", "synthetic"):
        key = {"cell": "phase_cells", "synthetic": "synthetic_culture"}[sample]
        viewer.open_sample("napari-cultureseg", key)
    else:
        viewer.open(sample, plugin="napari-cultureseg")
    from napari.layers import Image

    return next(layer for layer in viewer.layers if isinstance(layer, Image))


def main(
    *, sample: str = "synthetic", model: str | None = None, screenshot: str | None = None
) -> int:
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-cultureseg")
    viewer.window.resize(1280, 860)
    image = _open_sample(viewer, sample)
    for layer in list(viewer.layers):
        if layer is not image and layer.name.endswith("truth"):
            layer.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Segment")
    widget.image.value = image
    if model:
        widget.model.value = model
    if screenshot is None:
        napari.run()
        return 0

    outcome = {"code": 1}

    def shoot():
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
