"""How well is an image's object size estimated? Test images resampled from 0.5x to 2x.

    python benchmarks/scale.py --model brightfield-nucleus-cell \
        --data ../shared/data/brightfield_aisegcell/nucleus_cell [--split test] [--limit 8]

Every test image of the model (its card's ``test_ids``: no training choice saw
them) is resampled by each zoom in 0.5, 0.71, 1, 1.41, 2; the true diameter is
the median equivalent diameter of the reference class's objects in the
image's own mask times the zoom. Each estimator of :mod:`napari_cultureseg.core.scale`
then estimates it from the resampled image alone; the relative error
``|estimate - truth| / truth`` is reported per estimator (median, worst) with
the seconds it took. Results are merged into ``benchmarks/results/scale.json``
under "MODEL (SPLIT)".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZOOMS = (0.5, 0.71, 1.0, 1.41, 2.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test", choices=["test", "val", "all"])
    ap.add_argument("--limit", type=int, default=8, help="at most this many test images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--estimators", default="objects,all-objects,confidence")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.model_input import resize_planes, zoomed_shape
    from napari_cultureseg.core.scale import estimate_diameter, median_diameter

    bundle = load_bundle(args.model)
    sc = bundle.config.scale
    if not sc.diameter:
        print(f"{args.model} records no training scale", file=sys.stderr)
        return 2
    ids = None
    if args.split != "all":
        ids = set(
            bundle.config.card.get("test_ids" if args.split == "test" else "validation_ids") or []
        )
    truths = [
        t for t in truth_from_folder(args.data, [sc.reference], only=ids) if sc.reference in t.masks
    ][: args.limit]
    rows = []
    for t in truths:
        d0 = median_diameter([t.masks[sc.reference]])
        if not d0:
            continue
        for z in ZOOMS:
            img = np.asarray(t.image, np.float32)
            planes = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
            shape = zoomed_shape(img.shape[:2], z)
            zimg = resize_planes(planes, shape)
            zimg = zimg[0] if img.ndim == 2 else np.moveaxis(zimg, 0, -1)
            row = {"image": t.name, "zoom": z, "true_diameter": d0 * z}
            for method in args.estimators.split(","):
                t0 = time.perf_counter()
                est = estimate_diameter(bundle, zimg, method=method, device="cpu")
                sec = time.perf_counter() - t0
                err = (abs(est.diameter - d0 * z) / (d0 * z)) if est.diameter else None
                row[method] = {
                    "diameter": est.diameter,
                    "relative_error": err,
                    "seconds": round(sec, 2),
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for method in args.estimators.split(","):
        errs = [r[method]["relative_error"] for r in rows]
        found = [e for e in errs if e is not None]
        summary[method] = {
            "median_relative_error": float(np.median(found)) if found else None,
            "worst_relative_error": float(np.max(found)) if found else None,
            "share_within_20_percent": float(np.mean([e <= 0.2 for e in found])) if found else 0,
            "not_found": len(errs) - len(found),
            "seconds_median": float(np.median([r[method]["seconds"] for r in rows])),
            "by_zoom": {
                str(z): float(
                    np.median(
                        [
                            r[method]["relative_error"]
                            for r in rows
                            if r["zoom"] == z and r[method]["relative_error"] is not None
                        ]
                        or [np.nan]
                    )
                )
                for z in ZOOMS
            },
        }
    print(json.dumps(summary, indent=1))
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[f"{args.model} ({args.split})"] = {
        "data": os.path.relpath(args.data, ROOT),
        "split": args.split,
        "images": len(truths),
        "zooms": list(ZOOMS),
        "training_diameter": sc.diameter,
        "reference": sc.reference,
        "summary": summary,
        "rows": rows,
        "threads": args.threads,
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
