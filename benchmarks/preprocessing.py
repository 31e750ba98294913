"""Aydın et al.'s (2022) preprocessing, measured: does a 3x3 median or histogram matching help?

    python benchmarks/preprocessing.py [--variants none,median,hist,median+hist]
                                       [--seconds 480] [--threads 1]

Trains one `fluorescence-nuclei` model per variant from ``configs/fluorescence-nuclei.yaml``
(its data, split, architecture and loss), changing only the input preprocessing:

  none          percentile normalisation alone
  median        + 3x3 median filter before normalisation (the bundled model's setting)
  hist          + every image matched to the brightest training image's histogram
  median+hist   both, in Aydın et al.'s (2022) order (median, normalise, match)

Every variant gets the same time budget (``--seconds``, shorter than the bundled
model's) and is scored on the same held-out validation images (Dice, object F1 and
SA at IoU 0.5, mSA). Variants may run in separate processes at the same time
(``--variants median`` in one, ``--variants none`` in another); each merges its
rows into ``benchmarks/results/preprocessing.json``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fluorescence-nuclei.yaml"
OUT = ROOT / "benchmarks" / "results" / "preprocessing.json"
VARIANTS = {
    "none": {"median3": False, "histogram_match": False},
    "median": {"median3": True, "histogram_match": False},
    "hist": {"median3": False, "histogram_match": True},
    "median+hist": {"median3": True, "histogram_match": True},
}


def run_variant(name: str, y: dict, data_root: Path, seconds: float, threads: int) -> dict:
    import yaml

    from napari_cultureseg.core.evaluate import evaluate, truth_from_folder
    from napari_cultureseg.core.training import prepare_from_config, run_training

    y = {**y, "input": {**y["input"], **VARIANTS[name]}, "name": f"fluorescence-{name}"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "variant.yaml"
        path.write_text(yaml.safe_dump(y))
        r = prepare_from_config(path, data_root=data_root)
    train, val = r.train, r.val
    config = replace(r.training, max_seconds=seconds, threads=threads)
    t0 = time.perf_counter()
    bundle = run_training(r.model, config, train, val)
    train_seconds = time.perf_counter() - t0
    truths = truth_from_folder(
        data_root / y["data"][0]["folder"], ["nucleus"], only={s.name for s in val}
    )
    r = evaluate(bundle, truths, device="cpu", diameter=None)["classes"]["nucleus"]
    return {
        "input": VARIANTS[name],
        "train_images": len(train),
        "val_images": len(truths),
        "steps": bundle.config.lineage.get("steps"),
        "train_seconds": round(train_seconds, 1),
        "dice": r["dice"],
        "object_f1": r["object_f1"],
        "sa50": r["sa_0.5"],
        "msa": r["msa"],
    }


def merge(rows: dict, meta: dict) -> dict:
    """Add ``rows`` to the results file under a lock (other variants may write too)."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(OUT.read_text()) if OUT.is_file() else {}
        if old.get("seconds_per_variant") != meta["seconds_per_variant"]:
            old = {}  # rows from another budget are not comparable
        out = {**old, **meta, "variants": {**old.get("variants", {}), **rows}}
        OUT.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seconds", type=float, default=480)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=None, help="data root (default: ../shared/data)")
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    import yaml

    y = yaml.safe_load(CONFIG.read_text())
    root = Path(args.data or os.environ.get("CULTURESEG_DATA") or CONFIG.parent / y["data_root"])
    meta = {
        "config": CONFIG.name,
        "seconds_per_variant": args.seconds,
        "machine": f"{platform.machine()} CPU, {args.threads} thread(s) per variant",
    }
    out = {}
    for name in names:
        print(f"training variant {name} for {args.seconds:.0f} s", flush=True)
        row = run_variant(name, y, root, args.seconds, args.threads)
        print(f"  {name}: {row}", flush=True)
        out = merge({name: row}, meta)
    print("\n| variant | steps | Dice | object F1@0.5 | SA(0.5) | mSA |")
    print("|---|---|---|---|---|---|")
    for name, r in out["variants"].items():
        print(
            f"| {name} | {r['steps']} | {r['dice']:.3f} | {r['object_f1']:.3f} | "
            f"{r['sa50']:.3f} | {r['msa']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
