"""What test-time augmentation buys, and what it costs: the same test images with 1, 4 and 8 copies.

    python benchmarks/tta.py --model phase-cells --data ../shared/data/phase_usiigaci
        [--split test] [--copies 1,4,8] [--threads 2]

Scores the model's test images (its card's ``test_ids``) as ``cultureseg
evaluate`` does (object size estimated per image) once per number of copies,
and times each pass. Results are merged into ``benchmarks/results/tta.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("dice", "object_f1", "sa_0.5", "msa")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test", choices=["test", "val", "all"])
    ap.add_argument("--copies", default="1,4,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diameter", default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tta.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.evaluate import evaluate, truth_from_folder

    bundle = load_bundle(args.model)
    cfg = bundle.config
    names = cfg.class_names + [d.name for d in cfg.derived]
    ids = None
    if args.split != "all":
        ids = set(cfg.card.get("test_ids" if args.split == "test" else "validation_ids") or [])
    truths = truth_from_folder(args.data, names, only=ids)
    diameter = None if args.diameter == "none" else args.diameter
    rows = {}
    for n in (int(c) for c in args.copies.split(",")):
        t0 = time.perf_counter()
        r = evaluate(bundle, truths, device="cpu", diameter=diameter, tta=n)
        sec = time.perf_counter() - t0
        rows[str(n)] = {
            "seconds_per_image": round(sec / len(truths), 2),
            "classes": {c: {k: m[k] for k in KEYS if k in m} for c, m in r["classes"].items()},
        }
        print(n, json.dumps(rows[str(n)]), flush=True)
    from _results import merge_result

    entry = {
        "split": args.split,
        "images": len(truths),
        "threads": args.threads,
        "diameter": args.diameter,
        "copies": rows,
    }
    key = cfg.name if args.split == "test" else f"{cfg.name} ({args.split})"
    merge_result(args.out, key, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
