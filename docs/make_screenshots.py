"""Screenshots of the widgets for the user guide, taken from a real viewer.

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/make_screenshots.py

Writes docs/images/segment.png and docs/images/finetune.png, both of a 1920x1080
window with both docks open (every control on screen): the synthetic
culture sample segmented with the default model, a correction painted by hand,
and a short fine-tuning run (30 steps) on it; and docs/images/culture_classes.jpg:
the synthetic tumour culture (Rahkonen et al.'s six classes) segmented with
`culture-multilabel` (or, where that model is not installed, its truth layers).
With ``cultures`` as argument only that one is made; with ``plate``, only
docs/images/plate.jpg: a synthetic 24-well plate (4 fields of 512² per well,
cell numbers rising along the plate) segmented by ``cultureseg segment --table
--rank`` with the default model, opened in the Plate dock, wells coloured by
cell count, one field open. With ``coculture``, only docs/images/coculture_napari.jpg:
a generated test co-culture segmented with ``coculture-celltype``, one layer of
instances per cell type.
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


def plate() -> None:
    """The Plate dock on a segmented synthetic plate, wells coloured by their cell count."""
    import tempfile

    import napari
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_cultureseg.cli import main as cli
    from napari_cultureseg.core.synth import phase_culture

    tmp = Path(tempfile.mkdtemp(prefix="cultureseg-plate-"))
    src, out = tmp / "plate", tmp / "results"
    src.mkdir()
    for w in range(24):
        well = f"{'ABCD'[w // 6]}{w % 6 + 1:02d}"
        for f in range(4):
            image, _ = phase_culture((512, 512), seed=4 * w + f, n_cells=10 + 2 * w)
            tifffile.imwrite(src / f"{well}_s{f + 1}.tif", image)
    cli(["segment", str(src), "--out", str(out), "--table", "--rank", "--quiet"])
    viewer = napari.Viewer(title="napari-cultureseg")
    viewer.window.resize(1920, 1080)
    _, dock = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Plate")
    dock.folder.value, dock.results.value = src, out
    dock.open_plate()
    if "cell_count" not in dock.statistic.choices:
        raise RuntimeError(f"the plate did not open as expected: {dock.status.value}")
    dock.statistic.value = "cell_count"
    dock.grid.cellClicked.emit(2, 3)
    app = QApplication.instance()
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    save(viewer, "plate.jpg")
    viewer.close()


def coculture() -> None:
    """A generated test co-culture segmented with ``coculture-celltype``: one instance layer
    per cell type (needs ``python benchmarks/coculture.py --routes unet --bundle`` first)."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cultureseg.core.images import read_image

    root = Path(__file__).resolve().parents[1]
    test = root / "benchmarks" / "results" / "cache" / "coculture" / "data-200-40-0" / "test"
    image = test / "test00000_image.tif"
    if not image.is_file():
        raise SystemExit(f"{image} is missing: run benchmarks/coculture.py first")
    viewer = napari.Viewer(title="napari-cultureseg")
    viewer.window.resize(1920, 1080)
    viewer.add_image(read_image(image), name="generated co-culture (test)")
    _, seg = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Segment")
    seg.image.value = viewer.layers["generated co-culture (test)"]
    seg.model.value = "coculture-celltype"
    app = QApplication.instance()
    seg.start()
    wait(app, lambda: seg.worker is None)
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    save(viewer, "coculture_napari.jpg")
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
    if sys.argv[1:] == ["plate"]:
        plate()
        sys.exit(0)
    if sys.argv[1:] == ["coculture"]:
        coculture()
        sys.exit(0)
    code = main()
    cultures()
    plate()
    sys.exit(code)
