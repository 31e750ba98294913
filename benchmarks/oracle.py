"""What limits a model's objects: its mask or its distance map (flow)? Each swapped for the truth.

    python benchmarks/oracle.py --model phase-cells --data ../shared/data/phase_usiigaci
        [--split val] [--threads 1]

For every counted class with a distance channel (or flow channels), the image
is segmented once (object size auto, as ``cultureseg evaluate``) and its
objects are made three ways: the model's mask split by the model's distance map
or flow (what ships); the model's mask split by the true one (the reference
objects resampled to the network's grid, :func:`targets.distances` or
:func:`targets.flows`; the rows still say "true distance"); the true mask split
by the model's own. SA(0.5) and mSA of each go to
``benchmarks/results/oracle.json``. A large gain from the true distance says the
separation of touching objects is what to improve; from the true mask, the
outline. Run it on validation images: it is a diagnosis that chooses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a bundled model's name or a bundle folder")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val", choices=("val", "test"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "oracle.json"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from _results import bundle_of, merge_result

    from napari_cultureseg.core.bundle_config import distance_channels, flow_channels
    from napari_cultureseg.core.datasets import _resample_labels
    from napari_cultureseg.core.evaluate import _as_labels, truth_from_folder
    from napari_cultureseg.core.object_metrics import mean_segmentation_accuracy
    from napari_cultureseg.core.scale import estimate_diameter
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.targets import distances, flows
    from napari_cultureseg.core.tiling import run_to_end

    bundle = bundle_of(args.model)
    cfg = bundle.config
    dist_of = {**distance_channels(cfg.classes), **flow_channels(cfg.classes)}
    ids = set(cfg.card.get("validation_ids" if args.split == "val" else "test_ids") or [])
    if not dist_of or not ids:
        print(f"{args.model}: no distance channel or no {args.split} images", file=sys.stderr)
        return 2
    truths = truth_from_folder(args.data, cfg.class_names, only=ids)
    ways = ("model", "true distance", "true mask")
    objects = {c: {w: [] for w in ways} for c in dist_of}
    refs = {c: [] for c in dist_of}
    for t in truths:
        zoom = estimate_diameter(bundle, t.image, device="cpu").zoom
        seg = run_to_end(segment(bundle, t.image, device="cpu", zoom=zoom))
        masks = seg.masks()
        for name, ch in dist_of.items():
            if name not in t.masks:
                continue
            ref = _as_labels(t.masks[name])
            refs[name].append(ref)
            objects[name]["model"].append(seg.instances(name, masks[name]))
            objects[name]["true mask"].append(seg.instances(name, ref > 0))
            ch = list(ch) if isinstance(ch, tuple) else ch  # a flow: two channels
            predicted = seg.raw[ch].copy()
            small = _resample_labels(ref.astype(np.int32), seg.raw.shape[1:])
            seg.raw[ch] = distances(small) if isinstance(ch, int) else (flows(small) + 1) / 2
            objects[name]["true distance"].append(seg.instances(name, masks[name]))
            seg.raw[ch] = predicted
    result = {}
    for name, per_way in objects.items():
        for way, preds in per_way.items():
            msa, per_tau = mean_segmentation_accuracy(preds, refs[name], per_tau=True)
            result.setdefault(name, {})[way] = {
                "sa_0.5": round(float(per_tau[0]), 4),
                "msa": round(float(msa), 4),
            }
    print(json.dumps(result, indent=1))
    entry = {
        "data": os.path.relpath(args.data, ROOT),
        "split": args.split,
        "images": len(truths),
        "results": result,
    }
    merge_result(args.out, f"{cfg.name} ({args.split})", entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
