"""Cold start in napari: the first segmentation of the Segment widget against the next ones.

    xvfb-run -a python benchmarks/widget_cold_start.py [--runs 3]

Each run is a fresh process (a user opening napari): a viewer, the Segment
widget docked, a 1024² phase-contrast image added, then Segment pressed three
times with the defaults (model, object size estimated, runtime auto). Reported:
the seconds from pressing Segment to the layers in the viewer, first press and
the median of the next two, with the ONNX export cache filled (every day) and
empty (the very first use of a model), and the time to build the viewer with
the widget. Writes benchmarks/results/widget_cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_session() -> dict:
    t0 = time.perf_counter()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cultureseg._widgets.segment import SegmentWidget
    from napari_cultureseg.core.synth import phase_culture

    viewer = napari.Viewer(show=True)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    viewer.add_image(phase_culture((1024, 1024), seed=0)[0], name="field")
    w.image.reset_choices()
    app = QApplication.instance()
    app.processEvents()
    ready = time.perf_counter() - t0
    presses = []
    for _ in range(3):
        s = time.perf_counter()
        w.start()
        while w.worker is not None:
            app.processEvents()
            time.sleep(0.005)
        presses.append(time.perf_counter() - s)
        assert "field · cell" in [layer.name for layer in viewer.layers], w.status.value
    model = str(w.model.value)
    viewer.close()
    return {"viewer_and_widget_seconds": ready, "presses": presses, "model": model}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "widget_cold_start.json")
    )
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_session()))
        return 0
    work = Path(tempfile.mkdtemp(prefix="cultureseg-widget-"))
    result = {"load_average_at_start": list(os.getloadavg()), "runs": args.runs}
    for label, fresh in (("cache empty (first use)", True), ("cache filled", False)):
        rows = []
        for i in range(args.runs):
            home = work / (f"fresh{i}" if fresh else "fresh0")  # filled by the first arm
            env = dict(os.environ, CULTURESEG_HOME=str(home))
            out = subprocess.run(
                [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True
            )
            if out.returncode:
                raise SystemExit(out.stderr[-2000:])
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        first = [r["presses"][0] for r in rows]
        later = [statistics.median(r["presses"][1:]) for r in rows]
        result[label] = {
            "model": rows[0]["model"],
            "viewer_and_widget_seconds": statistics.median(
                r["viewer_and_widget_seconds"] for r in rows
            ),
            "first_press_seconds": statistics.median(first),
            "later_press_seconds": statistics.median(later),
            "all": rows,
        }
        print(label, json.dumps({k: v for k, v in result[label].items() if k != "all"}))
    result["load_average_at_end"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
