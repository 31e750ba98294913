"""Another magnification: models on their test images resampled by 0.5, 1 and 2.

    python benchmarks/magnification.py --data ../shared/data/phase_usiigaci \
        --models phase-cells,PATH/TO/OTHER [--zooms 0.5,1,2] [--diameter auto] [--threads 1]

A user's objective or camera changes the size of every cell in pixels. Each test
image of the first model's card (``test_ids``: no training choice of that model
saw them) and its reference masks are resampled by each zoom (images bilinearly,
instance labels by nearest neighbour), then every model segments them as
``cultureseg evaluate`` does, with ``--diameter`` (``auto``: the size estimated per
image; a model without a recorded scale segments at the image's own scale
whatever is asked). Dice, object F1, SA(0.5) and mSA per model and zoom are merged
into ``benchmarks/results/magnification.json`` under the data folder's name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("dice", "object_f1", "sa_0.5", "msa")


def resampled(truths, zoom: float):
    """The truths with images and masks resampled by ``zoom``."""
    import numpy as np

    from napari_cultureseg.core.evaluate import Truth
    from napari_cultureseg.core.model_input import resize_planes, zoomed_shape

    out = []
    for t in truths:
        img = np.asarray(t.image, np.float32)
        shape = zoomed_shape(img.shape[:2], zoom)
        planes = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        z = resize_planes(planes, shape)
        z = z[0] if img.ndim == 2 else np.moveaxis(z, 0, -1)
        masks = {
            c: resize_planes(np.asarray(m)[None].astype(np.float32), shape, order=0)[0].astype(
                np.int32
            )
            for c, m in t.masks.items()
        }
        out.append(Truth(t.name, z, masks))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", required=True, help="names or bundle folders, comma-separated")
    ap.add_argument("--zooms", default="0.5,1,2")
    ap.add_argument("--diameter", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "magnification.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from _results import class_scores, merge_result

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.evaluate import evaluate, truth_from_folder

    models = args.models.split(",")
    bundles = [load_bundle(m) for m in models]
    first = bundles[0].config
    ids = set(first.card.get("test_ids") or [])
    if not ids:
        print(f"{models[0]} names no test images in its card", file=sys.stderr)
        return 2
    truths = truth_from_folder(args.data, first.class_names, only=ids)
    result = {}
    for zoom in (float(z) for z in args.zooms.split(",")):
        data = resampled(truths, zoom)
        for name, bundle in zip(models, bundles, strict=True):
            t0 = time.perf_counter()
            r = evaluate(bundle, data, device="cpu", diameter=args.diameter)
            row = class_scores(r["classes"], KEYS)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            row["zooms"] = r["zooms"]
            result.setdefault(Path(name).name, {})[str(zoom)] = row
            shown = {c: v for c, v in row.items() if c != "zooms"}
            print(name, zoom, json.dumps(shown), flush=True)
    entry = {
        "data": os.path.relpath(args.data, ROOT),
        "images": sorted(ids),
        "diameter": args.diameter,
        "threads": args.threads,
        "models": result,
    }
    merge_result(args.out, Path(args.data).name, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
