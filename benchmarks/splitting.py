"""What the *splitting* setting can do on an experiment a model never saw.

    python benchmarks/splitting.py [--variant recipe3]
        [--experiments 181024TK20,200313SK20,200925SK30,210930MA20]
        [--levels 0.2,0.3,0.4,0.5,0.6,0.7,0.8] [--threads 1]

Takes the leave-one-experiment-out models of ``benchmarks/loeo.py`` (the cached
``<variant>-without-<E>`` bundles), segments every field of the held-out experiment
E once (object size estimated per image, as a user runs it) and cuts the nuclei into
objects at each splitting level (:meth:`Segmentation.with_seeds`, the Segment dock's
*↳ splitting* slider, ``cultureseg segment --splitting``). The model's own level was
chosen on its validation images (other experiments); the best level on E is an
oracle: it is what a user can reach by moving the slider while looking at E, not a
figure of the model. Results: ``benchmarks/results/splitting.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from loeo import CACHE, DATA, EXPERIMENTS  # noqa: E402


def scores(preds: list, trues: list) -> dict:
    from napari_cultureseg.core import object_metrics as OM

    out = OM.pooled_object_prf(preds, trues, 0.5)
    return {
        "object_f1": out["object_f1"],
        "sa_0.5": OM.segmentation_accuracy(preds, trues, 0.5),
        "objects_pred": out["objects_pred"],
        "objects_true": out["objects_true"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="recipe3")
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS))
    ap.add_argument("--levels", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--cls", default="nucleus")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "splitting.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.evaluate import _as_labels, truth_from_folder
    from napari_cultureseg.core.scale import estimate_diameter
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    levels = [float(v) for v in args.levels.split(",")]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for held in args.experiments.split(","):
        path = CACHE / f"{args.variant}-without-{held}"
        if not (path / "config.json").is_file():
            sys.exit(f"{path}: no such model; train it with benchmarks/loeo.py --variant ...")
        bundle = Bundle.load(path)
        own = next(c.seed_threshold for c in bundle.config.classes if c.name == args.cls)
        truths = [t for t in truth_from_folder(DATA, [args.cls]) if held in t.name]
        t0 = time.perf_counter()
        segs, trues = [], []
        for t in truths:
            zoom = estimate_diameter(bundle, t.image, device="cpu").zoom
            segs.append(run_to_end(segment(bundle, t.image, device="cpu", zoom=zoom)))
            trues.append(_as_labels(t.masks[args.cls]))
        by_level = {}
        for lv in sorted({*levels, own}):
            preds = [s.with_seeds({args.cls: lv}).instances(args.cls) for s in segs]
            by_level[f"{lv:g}"] = scores(preds, trues)
        best = max(by_level, key=lambda k: (by_level[k]["object_f1"], -abs(float(k) - own)))
        row = {
            "variant": args.variant,
            "experiment": held,
            "class": args.cls,
            "fields": len(truths),
            "own_level": own,
            "best_level_on_the_experiment (oracle)": float(best),
            "levels": by_level,
            "seconds": round(time.perf_counter() - t0, 1),
            "threads": args.threads,
        }
        results[f"{args.variant}/{held}/{args.cls}"] = row
        f1 = {k: round(v["object_f1"], 3) for k, v in by_level.items()}
        print(held, "own", own, "best", best, f1, flush=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
