"""Touching objects: the network's distance map against the watershed of the mask, same network.

    python benchmarks/separation.py --model phase-cells --data ../shared/data/phase_usiigaci
        [--splits val,test] [--threads 1]

The same weights and the same masks, only the step that turns a mask into objects
changes (``postprocess.instances``): the model's own ``separate`` (a predicted
distance map for the bundled real-data models, seeds where it reaches its
``seed_threshold``), the watershed of the mask's distance transform from its
h-maxima (h = 2 and 5 px at the network's scale; the first release's phase-cells
used 5) and plain connected components. The object size is estimated per image
as ``cultureseg evaluate`` does, with each variant's objects (the estimate
depends on them). The validation images choose; the test images report.
Object F1, SA(0.5) and mSA per counted class are merged into
``benchmarks/results/separation.json`` under the model's name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("dice", "object_f1", "sa_0.5", "msa")
VARIANTS = {
    "own": None,
    "watershed h=2": ("watershed", 2.0),
    "watershed h=5": ("watershed", 5.0),
    "components": ("components", 0.0),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "separation.json"))
    args = ap.parse_args(argv)

    from dataclasses import replace

    import torch

    torch.set_num_threads(args.threads)
    from _results import merge_result, scores_with

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.segmentation import Segmentation

    bundle = load_bundle(args.model)
    cfg = bundle.config
    own = {c.name: c.separate for c in cfg.classes if c.instances}
    original = Segmentation.spec
    result = {}
    for split in args.splits.split(","):
        key = "test_ids" if split == "test" else "validation_ids"
        ids = set(cfg.card.get(key) or [])
        if not ids:
            print(f"{args.model} names no {split} images in its card", file=sys.stderr)
            return 2
        truths = truth_from_folder(args.data, cfg.class_names, only=ids)
        for name, variant in VARIANTS.items():

            def spec(self, cls, variant=variant):
                s = original(self, cls)  # the class as the network knows it ...
                if variant is None or not getattr(s, "instances", False):
                    return s
                # ... with another way of splitting its mask into objects
                return replace(s, separate=variant[0], split_depth=variant[1])

            row = scores_with(bundle, truths, KEYS, own, spec=spec)
            result.setdefault(split, {})[name] = row
            print(split, name, json.dumps(row), flush=True)
    entry = {
        "data": os.path.relpath(args.data, ROOT),
        "own": own,
        "threads": args.threads,
        "results": result,
    }
    merge_result(args.out, cfg.name, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
