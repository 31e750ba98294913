"""Batch statistics of a new experiment (AdaBN): a tried and dropped idea, measured.

    python benchmarks/adabn.py [--variant recipe3] [--experiments 181024TK20] [--threads 1]

AdaBN (Li et al. 2016, "Revisiting batch normalization for practical domain
adaptation") re-estimates a network's BatchNorm statistics on the images of a new
domain, without labels. Here: the leave-one-experiment-out model of
``benchmarks/loeo.py`` (cached ``<variant>-without-<E>``), its BatchNorm running
statistics reset and re-estimated (cumulative average) on every 256² crop of E's
fields at the model's scale (the zoom the model's own size estimate gave them in
``loeo.json``), then E scored as ``loeo.py`` scores it (object size auto). No label of
E is used; the base row is the unadapted model's from ``loeo.json``.
Results: ``benchmarks/results/adabn.json`` (merged per variant and experiment).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from loeo import CACHE, DATA, score  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "adabn.json"


def adapted(bundle, planes_at_scale, crop: int = 256):
    """``bundle`` with its BatchNorm statistics re-estimated on ``planes_at_scale``."""
    import torch

    from napari_cultureseg.core.bundles import Bundle

    net = bundle.build()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every crop
    net.eval()
    for m in bns:
        m.train()
    n = 0
    with torch.no_grad():
        for x in planes_at_scale:
            _, h, w = x.shape
            for y0 in range(0, max(1, h - crop + 1), crop):
                for x0 in range(0, max(1, w - crop + 1), crop):
                    c = np.ascontiguousarray(x[:, y0 : y0 + crop, x0 : x0 + crop])
                    net(torch.from_numpy(c)[None])
                    n += 1
    return Bundle(bundle.config, net.state_dict(), None, bundle.aux), n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="recipe3")
    ap.add_argument("--experiments", default="181024TK20")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.model_input import to_model_input

    runs = json.loads((ROOT / "benchmarks" / "results" / "loeo.json").read_text())["runs"]
    old = json.loads(OUT.read_text())["runs"] if OUT.is_file() else []
    for held in args.experiments.split(","):
        base = Bundle.load(CACHE / f"{args.variant}-without-{held}")
        row = next(r for r in runs if r["variant"] == args.variant and r["experiment"] == held)
        zooms = row["auto"]["zooms"]
        truths = [t for t in truth_from_folder(DATA, ["nucleus", "cell"]) if held in t.name]
        planes = [to_model_input(t.image, base.config.input, zoom=zooms[t.name]) for t in truths]
        bundle, crops = adapted(base, planes)
        after = score(bundle, truths, "auto")
        keys = [k for k, v in after.items() if isinstance(v, float) and k != "seconds"]
        out = {
            "variant": args.variant,
            "experiment": held,
            "crops": crops,
            "base": {k: row["auto"][k] for k in keys if k in row["auto"]},
            "adapted": {k: after[k] for k in keys},
        }
        print(
            held,
            {
                k: (round(out["base"].get(k, np.nan), 3), round(v, 3))
                for k, v in out["adapted"].items()
            },
            flush=True,
        )
        old = [r for r in old if (r["variant"], r["experiment"]) != (args.variant, held)]
        old.append(out)
        OUT.write_text(json.dumps({"runs": old}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
