"""Does the viewer stay responsive while a whole well is cut into objects?

    xvfb-run -a python benchmarks/counting.py [--side 4096]

A ``side``² phase-contrast field (the plugin's synthetic culture, tiled) is segmented
with ``phase-cells`` in a real napari viewer; then its cells are cut into objects at
splitting 0.7 twice, while a 10 ms QTimer probes the Qt event loop
(:func:`responsiveness.probe`): first the way releases before 2026-12-05 did it, on
the GUI thread (the same ``count_job``, run inside the event loop), then as the
Segment dock does now, in a worker thread started by its *splitting* slider. Reports
the stalls (p50 / p99 / max, ms) and the seconds until the objects layer was
written; writes benchmarks/results/counting.json. 4096² is the largest image the
dock counts by itself after Segment.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import napari_cultureseg._widgets  # noqa: F401  (keeps triton out before torch loads)

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "counting.json"))
    args = ap.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    from responsiveness import probe, summary

    from napari_cultureseg._widgets._segment_layers import count_job
    from napari_cultureseg._widgets.segment import SegmentWidget
    from napari_cultureseg.core.synth import phase_culture
    from napari_cultureseg.core.tiling import run_to_end

    tile, _ = phase_culture((1024, 1024), seed=1)
    k = -(-args.side // 1024)
    img = np.tile(tile, (k, k))[: args.side, : args.side]
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.add_image(img, name="well")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    seg.model.value = "phase-cells"
    seg.image.reset_choices()
    seg.start()
    while seg.worker is not None or seg.counter is not None:
        app.processEvents()
        time.sleep(0.01)
    level = 0.7
    cells = viewer.layers["well · cell"].data > 0
    baseline = probe(app, 3.0)

    gui = {}

    def on_gui_thread():  # the old way: the cut blocks the event loop
        t0 = time.perf_counter()
        job = count_job(seg.result.with_seeds({"cell": level}), {"cell": cells}, None)
        labels = run_to_end(job)["cell"]
        viewer.layers["well · cell objects"].data = labels
        gui["objects"] = int(labels.max())
        gui["seconds"] = time.perf_counter() - t0

    QTimer.singleShot(200, on_gui_thread)
    blocked = probe(app, 600.0, until=lambda: "seconds" in gui)
    blocked += probe(app, 0.3)

    t0 = time.perf_counter()
    seg._splitting["cell"].value = level  # the new way: a worker thread
    worker = probe(app, 600.0, until=lambda: seg.counter is None)
    threaded_seconds = time.perf_counter() - t0
    worker += probe(app, 0.3)
    objects = int(viewer.layers["well · cell objects"].data.max())
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "image": f"{args.side}x{args.side} synthetic phase-contrast culture (seed 1, tiled)",
        "model": "phase-cells",
        "splitting": level,
        "objects": {"gui_thread": gui["objects"], "worker": objects},
        "seconds_until_counted": {
            "gui_thread": round(gui["seconds"], 2),
            "worker": round(threaded_seconds, 2),
        },
        "stalls": {
            "baseline": summary(baseline),
            "gui_thread": summary(blocked),
            "worker": summary(worker),
        },
    }
    viewer.close()
    from _results import write_result

    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
