"""Seconds to segment one 1024×1024 image with every bundled model, on this machine.

    python benchmarks/speed.py [--threads N]

The whole `segment` path is timed (normalisation, tiled inference, thresholds,
post-processing), median of 3 runs after one warm-up, with N torch threads, twice
per model in alternation: as `segment` runs by default (tiles grown to fit the
image, `tiling.fit_tile`) and with the bundle's fixed tile (the baseline; 9 tiles
of 512² for 1024²), so their ratio is measured in one run under the same load
(default: all cores; on a machine where other work runs, one thread measures
cleanly what two threads would not). Writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from napari_cultureseg.core.bundles import Bundle, bundled_dir
    from napari_cultureseg.core.images import as_plane, to_model_input
    from napari_cultureseg.core.models import output_stride
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.synth import phase_culture
    from napari_cultureseg.core.tiling import fit_tile, run_to_end

    gray = phase_culture((1024, 1024), seed=0)[0]
    rgb = np.stack([gray] * 3, -1)
    rows = {}
    load_start = list(os.getloadavg())
    for path in sorted(p for p in bundled_dir().iterdir() if (p / "config.json").is_file()):
        bundle = Bundle.load(path)
        image = rgb if bundle.config.input.channels == 3 else gray

        fixed = {"tile": bundle.config.tile, "overlap": bundle.config.overlap, "fit": False}

        def once(bundle=bundle, image=image, **kw):
            t = time.perf_counter()
            run_to_end(segment(bundle, image, device="cpu", **kw)).masks()
            return time.perf_counter() - t

        once(), once(**fixed)
        times, base = [], []
        for _ in range(3):  # alternated, so both see the same load
            times.append(once())
            base.append(once(**fixed))
        x = to_model_input(as_plane(image), bundle.config.input)
        tile, overlap = fit_tile(
            x.shape[1:],
            bundle.config.tile,
            bundle.config.overlap,
            align=output_stride(bundle.config.architecture, bundle.config.params),
        )
        if bundle.config.input.resize_to:  # one whole pass at its own size: no tiles
            tile, overlap = None, 0.0
        rows[bundle.config.name] = {
            "seconds_median": statistics.median(times),
            "seconds_all": times,
            "tile": tile,
            "overlap": round(overlap, 4),
            "fixed_tile_seconds_median": statistics.median(base),
            "fixed_tile_seconds_all": base,
            "fixed_tile": bundle.config.tile,
            "fixed_overlap": bundle.config.overlap,
            "speedup_over_fixed_tile": statistics.median(base) / statistics.median(times),
            "parameters": sum(v.numel() for v in bundle.state_dict().values()),
        }
        r = rows[bundle.config.name]
        print(
            f"{bundle.config.name:28s} {r['seconds_median']:.2f} s (tile {tile}); fixed tile "
            f"{bundle.config.tile}: {r['fixed_tile_seconds_median']:.2f} s, "
            f"x{r['speedup_over_fixed_tile']:.2f}"
        )
    result = {
        "image": "1024x1024 synthetic phase contrast (seed 0)",
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "target_seconds": 2.0,
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()),  # other work on the machine
        "models": rows,
    }
    out = ROOT / "benchmarks" / "results" / "speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
