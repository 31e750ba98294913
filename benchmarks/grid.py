"""Objects separated on the network's grid or on the image's: same weights, same masks.

    python benchmarks/grid.py --model phase-cells --data ../shared/data/phase_usiigaci
        [--splits val,test] [--threads 1]

When an image is resampled so that its objects have the size the model learnt
(object size ``auto``), its touching objects can be split where the network saw
them, at that size, and then carried back onto the image's grid with the
outline of the class's mask (shipped, ``Segmentation.instances(grid="network")``);
or the probabilities are resampled back first and split on the image's grid with
``min_size`` and ``split_depth`` scaled (releases before 2026-12, ``grid="image"``).
The object size is estimated per image as ``cultureseg evaluate`` does, with each
variant's objects. Dice, object F1, SA(0.5) and mSA per counted class are merged
into ``benchmarks/results/grid.json`` under the model's name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("dice", "object_f1", "sa_0.5", "msa")
GRIDS = ("network", "image")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a bundled model's name or a bundle folder")
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", default="val,test", help="val, test (the card's), or all")
    ap.add_argument("--only", default="", help="only images whose name contains this")
    ap.add_argument("--name", default=None, help="key in the results file (default: model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grid.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from _results import bundle_of, merge_result, scores_with

    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.segmentation import Segmentation

    bundle = bundle_of(args.model)
    cfg = bundle.config
    counted = {c.name for c in cfg.classes if c.instances}
    original = Segmentation.instances
    result = {}
    for split in args.splits.split(","):
        if split == "all":
            ids = None
        else:
            ids = set(cfg.card.get("test_ids" if split == "test" else "validation_ids") or [])
            if not ids:
                print(f"{args.model} names no {split} images in its card", file=sys.stderr)
                return 2
        truths = truth_from_folder(args.data, cfg.class_names, only=ids)
        truths = [t for t in truths if args.only in t.name]
        for grid in GRIDS:

            def instances(self, name, mask=None, *, grid=grid):
                return original(self, name, mask, grid=grid)

            row = scores_with(bundle, truths, KEYS, counted, instances=instances)
            row["images"] = len(truths)
            result.setdefault(split, {})[grid] = row
            print(split, grid, json.dumps(row), flush=True)
    entry = {"data": os.path.relpath(args.data, ROOT), "threads": args.threads, "results": result}
    merge_result(args.out, args.name or cfg.name, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
