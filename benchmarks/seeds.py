"""Distance seeds chosen on validation images, for a model trained before ``choose_seeds``.

    python benchmarks/seeds.py --config configs/brightfield-nucleus-cell.yaml
        [--model brightfield-nucleus-cell] [--candidates 0.3,0.4,0.5,0.6,0.7]
        [--threads 2] [--apply DIR]

Loads the recipe's data and split, checks that its validation images are the ones the
model's lineage names, scores the model on them with each candidate seed threshold of
every class separated by a distance map (``separate: distance``), and reports which
scores the best SA(0.5) — what ``training.choose_seeds`` does at the end of a run. No
test image is seen. ``--apply DIR`` writes the bundle with the chosen thresholds to DIR.
Results are merged into ``benchmarks/results/seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", default=None, help="default: the recipe's name")
    ap.add_argument("--candidates", default="0.3,0.4,0.5,0.6,0.7")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--apply", default=None, metavar="DIR")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "seeds.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.training import prepare_from_config
    from napari_cultureseg.core.training.validation import with_seeds_chosen

    r = prepare_from_config(Path(args.config))
    bundle = load_bundle(args.model or r.model.name)
    names = list(bundle.config.lineage.get("data", {}).get("val", {}).get("names", []))
    if sorted(names) != sorted(s.name for s in r.val):
        sys.exit(
            f"{args.config}: its validation images {sorted(s.name for s in r.val)} are not the "
            f"model's ({sorted(names)}); choose on the images that picked its weights"
        )
    t0 = time.perf_counter()
    candidates = tuple(float(t) for t in args.candidates.split(","))
    new, chosen = with_seeds_chosen(bundle, r.val, candidates)
    row = {
        "model": bundle.config.name,
        "created": bundle.config.lineage.get("created"),
        "val_images": len(r.val),
        "was": {c.name: c.seed_threshold for c in bundle.config.classes if c.name in chosen},
        "chosen": chosen,
        "seconds": round(time.perf_counter() - t0, 1),
        "threads": args.threads,
    }
    print(json.dumps(row, indent=1))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[bundle.config.name] = row
    out.write_text(json.dumps(results, indent=1) + "\n")
    if args.apply:
        new.save(args.apply, overwrite=True)
        print("written", args.apply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
