"""Seconds to segment one 1024×1024 image with every bundled model, on this machine.

    python benchmarks/speed.py [--threads N]

The whole `segment` path is timed (normalisation, tiled inference, thresholds,
post-processing), median of 3 runs after one warm-up, with the model's own tile
settings, with N torch threads (default: all cores; on a machine where other work
runs, one thread measures cleanly what two threads would not). Writes
benchmarks/results/speed.json.
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
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.synth import phase_culture
    from napari_cultureseg.core.tiling import run_to_end

    gray = phase_culture((1024, 1024), seed=0)[0]
    rgb = np.stack([gray] * 3, -1)
    rows = {}
    for path in sorted(p for p in bundled_dir().iterdir() if (p / "config.json").is_file()):
        bundle = Bundle.load(path)
        image = rgb if bundle.config.input.channels == 3 else gray

        def once():
            t = time.perf_counter()
            run_to_end(segment(bundle, image, device="cpu")).masks()
            return time.perf_counter() - t

        once()
        times = [once() for _ in range(3)]
        rows[bundle.config.name] = {
            "seconds_median": statistics.median(times),
            "seconds_all": times,
            "tile": bundle.config.tile,
            "overlap": bundle.config.overlap,
            "parameters": sum(v.numel() for v in bundle.state_dict().values()),
        }
        print(f"{bundle.config.name:28s} {statistics.median(times):.2f} s")
    result = {
        "image": "1024x1024 synthetic phase contrast (seed 0)",
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "target_seconds": 2.0,
        "load_average_at_end": list(os.getloadavg()),  # other work on the machine
        "models": rows,
    }
    out = ROOT / "benchmarks" / "results" / "speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
