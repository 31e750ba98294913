"""How long the Plate dock takes to show the next field when that field is already segmented.

    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/plate_dock.py [--side 1024]

A synthetic plate of 4 wells × 3 fields (``side``², 16-bit) is segmented by
``cultureseg segment --table --rank`` with the default model; then a real napari
viewer opens it in the Plate dock and moves through every field with the dock's
next-field action (what PageDown does), timing each move from the call until Qt
has processed the events that draw the new layers (image, class layers bound to
the field's workspace). Results: ``benchmarks/results/plate_dock.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "plate_dock.json"))
    args = ap.parse_args(argv)

    import os

    os.environ["CULTURESEG_HOME"] = tempfile.mkdtemp(prefix="cultureseg-bench-")
    import napari
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_cultureseg.cli import main as cli
    from napari_cultureseg.core.synth import phase_culture

    tmp = Path(tempfile.mkdtemp(prefix="cultureseg-plate-dock-"))
    src, out = tmp / "plate", tmp / "results"
    src.mkdir()
    for w, well in enumerate(("A01", "A02", "B01", "B02")):
        for f in range(3):
            image, _ = phase_culture((args.side, args.side), seed=3 * w + f)
            tifffile.imwrite(src / f"{well}_s{f + 1}.tif", image)
    cli(["segment", str(src), "--out", str(out), "--table", "--rank", "--quiet"])
    viewer = napari.Viewer(title="plate dock benchmark")
    _, dock = viewer.window.add_plugin_dock_widget("napari-cultureseg", "Plate")
    app = QApplication.instance()
    dock.folder.value, dock.results.value = src, out
    dock.open_plate()
    dock.grid.cellClicked.emit(0, 0)  # the first field: model load, first layers
    for _ in range(10):
        app.processEvents()
    times = []
    if os.environ.get("PROFILE_DOCK"):
        import cProfile
        import pstats

        cProfile.runctx("dock.step(1); app.processEvents()", globals(), locals(), "/tmp/dock.prof")
        pstats.Stats("/tmp/dock.prof").sort_stats("cumtime").print_stats(25)
    for _ in range(len(dock._fields) - 1):
        t0 = time.perf_counter()
        dock.step(1)
        app.processEvents()
        times.append(1000 * (time.perf_counter() - t0))
        for _ in range(5):
            app.processEvents()
    res = {
        "side": args.side,
        "fields": len(times) + 1,
        "next_field_ms": [round(t, 1) for t in times],
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "layers_shown": [layer.name for layer in viewer.layers],
    }
    viewer.close()
    print(json.dumps(res, indent=1))
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
