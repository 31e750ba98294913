"""Every bundled model as a bioimage.io package, tested by bioimageio.core, and read back.

    python benchmarks/bioimageio_export.py [--out benchmarks/results/bioimageio.json]

For each bundled model: `cultureseg export` (which runs bioimageio.core's
test_model on the package: the test input through the ONNX and TorchScript weights,
compared with the output our engine computed), then `cultureseg import` of the
written package and a check that the imported bundle gives identical outputs.
Records the test's status, the package's size and the seconds taken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bioimageio.json"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from _results import merge_result
    from bioimageio.core import test_model

    from napari_cultureseg.core.bioimageio import export_package, import_package
    from napari_cultureseg.core.bundles import Bundle, bundled_dir, load_bundle

    torch.set_num_threads(args.threads)
    for folder in sorted(p for p in bundled_dir().iterdir() if (p / "config.json").is_file()):
        bundle = load_bundle(folder.name)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            row = {}
            try:
                package = export_package(bundle, Path(tmp) / f"{folder.name}.zip", test=False)
                row["export_seconds"] = round(time.perf_counter() - t0, 1)
                t1 = time.perf_counter()
                summary = test_model(package)
                row.update(status=summary.status, test_seconds=round(time.perf_counter() - t1, 1))
                row["package_mb"] = round(package.stat().st_size / 2**20, 1)
                back = Bundle.load(import_package(package, Path(tmp) / "imported"))
                c = bundle.config.input.channels
                x = np.random.default_rng(0).random((1, c, 256, 256), dtype=np.float32)
                row["round_trip_identical"] = bool(
                    np.array_equal(back.predictor("cpu")(x), bundle.predictor("cpu")(x))
                )
            except Exception as exc:  # a model the package cannot describe: say which and why
                row["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        print(folder.name, row, flush=True)
        merge_result(args.out, folder.name, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
