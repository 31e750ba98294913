"""Screenshots of the widgets for the user guide, taken from a real viewer.

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/make_screenshots.py

Writes docs/images/segment.png and docs/images/finetune.png, both of a 1920x1080
window with both docks open (every control on screen): the synthetic
culture sample segmented with the default model, a correction painted by hand,
and a short fine-tuning run (30 steps) on it; and docs/images/culture_classes.jpg:
the synthetic tumour culture (Rahkonen et al.'s six classes) segmented with
`culture-multilabel` (or, where that model is not installed, its truth layers).
With ``cultures`` as argument only the last one is made.
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari_cultureseg._widgets  # noqa: F401  (keeps triton out before torch loads)

OUT = Path(__file__).parent / "images"


def wait(app, condition, timeout=600.0):
    import time

    t = time.time()
    while not condition():
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t > timeout:
            raise TimeoutError("timed out")


def quiet(viewer) -> None:
    """Close notification toasts (any notice at start-up), which would cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def save(viewer, name: str) -> None:
    """A screenshot of the whole window as an 85 % JPEG (a tenth of the PNG's size)."""
    import imageio.v3 as iio

    quiet(viewer)
    iio.imwrite(OUT / name, viewer.screenshot(canvas_only=False)[..., :3], quality=85)


def cultures() -> None:
    """Six overlapping class layers on a synthetic tumour culture."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cultureseg.core.bundles import list_bundles

    viewer = napari.Viewer(title="napari-cultureseg")
    viewer.window.resize(1920, 1080)
    viewer.open_sample("napari-cultureseg", "tumour_culture")
    app = QApplication.instance()
    if "culture-multilabel" in list_bundles():
        for layer in list(viewer.layers)[1:]:
            viewer.layers.remove(layer)
        _, seg = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Segment")
        seg.image.value = viewer.layers["tumour culture"]
        seg.model.value = "culture-multilabel"
        seg.start()
        wait(app, lambda: seg.worker is None)
    else:
        for layer in list(viewer.layers)[1:]:
            layer.visible = True
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    save(viewer, "culture_classes.jpg")
    viewer.close()


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-cultureseg")
    viewer.window.resize(1920, 1080)
    viewer.open_sample("napari-cultureseg", "synthetic_culture")
    _, seg = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Segment")
    _, ft = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Fine-tune")
    app = QApplication.instance()
    seg.image.value = viewer.layers["synthetic culture"]
    seg.start()
    wait(app, lambda: seg.worker is None)
    cell = next(layer for layer in viewer.layers if layer.name.endswith("· cell"))
    cell.brush_size = 14
    cell.mode = "paint"
    cell.paint((256, 256), 1)
    viewer.layers.selection.active = cell
    viewer.reset_view()
    seg.accept_view()
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(str(OUT / "segment.png"), canvas_only=False)

    ft.steps.value = 30
    ft.preview_every.value = 10
    ft.model.value = seg.model.value
    ft.start()
    wait(app, lambda: ft.worker is None)
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(str(OUT / "finetune.png"), canvas_only=False)
    print("wrote", *(str(p) for p in sorted(OUT.glob("*.png"))))
    viewer.close()
    return 0


if __name__ == "__main__":
    import os
    import tempfile

    # the fine-tuned version and the workspace of these pictures must not land in the
    # user's own model and workspace folders
    os.environ["CULTURESEG_HOME"] = tempfile.mkdtemp(prefix="cultureseg-screenshots-")
    if sys.argv[1:] == ["cultures"]:
        cultures()
        sys.exit(0)
    code = main()
    cultures()
    sys.exit(code)
