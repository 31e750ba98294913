"""ONNX Runtime against torch: the same test images, the same figures?

    python benchmarks/runtimes.py [--models phase-cells,brightfield-nucleus-cell,...]
        [--threads 1] [--out benchmarks/results/runtimes.json]

For every bundled model whose test images are in ../shared/data (or, for
``coculture-celltype``, in benchmarks/results/cache/coculture, made by
benchmarks/coculture.py), its card's test images, and for the two models learnt
from synthetic images (``culture-multilabel``, ``spheroid-multiscale``) held-out
images of their generator (seeds 1000-1007, never used in training; spheroids 512²,
easy and hard wells), are segmented twice: with torch
and with ``--runtime onnx`` (object size estimated per image, by the same torch
pass for both, so only the segmenting pass differs). Reported per model and
class: Dice with each runtime and their difference (issue 15 asks ≤ 0.005), the
largest difference of any probability, and the seconds of each pass (on a busy
machine these are indicative only; the speed report is benchmarks/speed.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
DATA = ROOT.parent / "shared" / "data"
FOLDERS = {
    "phase-cells": DATA / "phase_usiigaci",
    "brightfield-nucleus-cell": DATA / "brightfield_aisegcell" / "nucleus_cell",
    "fluorescence-nuclei": DATA / "nuclei_dsb2018" / "fluorescence",
    "coculture-celltype": ROOT / "benchmarks/results/cache/coculture/data-200-40-0/test",
}
SYNTHETIC = {  # model: (generator kinds, image shape)
    "culture-multilabel": (("culture",), (1040, 1392)),
    "spheroid-multiscale": (("spheroid-easy", "spheroid-hard"), (512, 512)),
}


def synthetic_truths(model: str, n: int = 8) -> list:
    """Held-out images of the model's generator (test seeds 1000 onwards) as Truths."""
    from napari_cultureseg.core.evaluate import Truth
    from napari_cultureseg.core.synth.data import TEST_SEEDS, generate

    kinds, shape = SYNTHETIC[model]
    out = []
    for kind in kinds:
        for seed in TEST_SEEDS[:n]:
            image, masks = generate(kind, seed, shape=shape, rgb=kind == "culture")
            out.append(Truth(f"{kind}-s{seed}", image, masks))
    return out


def compare(model: str, folder: Path | None) -> dict:
    import numpy as np

    from napari_cultureseg.core import metrics as M
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.scale import estimate_diameter
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    bundle = load_bundle(model)
    names = [c.name for c in bundle.config.classes]
    if folder is None:
        truths = synthetic_truths(model)
    else:
        truths = truth_from_folder(folder, names, only=set(bundle.config.card["test_ids"]))
    t0 = time.perf_counter()
    segment_onnx = segment(bundle, np.zeros((64, 64), np.float32), device="cpu", runtime="onnx")
    first = next(segment_onnx)  # exports the network (or finds the export) and runs once
    export_s = time.perf_counter() - t0
    if first.note:
        return {"error": first.note}
    seconds = {"torch": 0.0, "onnx": 0.0}
    masks = {"torch": {}, "onnx": {}}
    max_diff = 0.0
    for t in truths:
        zoom = estimate_diameter(bundle, t.image, device="cpu").zoom
        probs = {}
        for runtime in ("torch", "onnx"):
            s = time.perf_counter()
            seg = run_to_end(segment(bundle, t.image, device="cpu", zoom=zoom, runtime=runtime))
            seconds[runtime] += time.perf_counter() - s
            probs[runtime] = seg.raw
            for name, m in seg.masks().items():
                masks[runtime].setdefault(name, []).append(m.ravel())
        max_diff = max(max_diff, float(np.abs(probs["torch"] - probs["onnx"]).max()))
    classes = {}
    for name in names:
        if not any(name in t.masks for t in truths):
            continue
        ref = np.concatenate([np.asarray(t.masks[name]).ravel() > 0 for t in truths])
        d = {r: float(M.dice(np.concatenate(masks[r][name]), ref)) for r in masks}
        classes[name] = {
            "dice_torch": round(d["torch"], 5),
            "dice_onnx": round(d["onnx"], 5),
            "difference": round(d["onnx"] - d["torch"], 5),
        }
    return {
        "test_images": len(truths),
        "classes": classes,
        "max_probability_difference": max_diff,
        "seconds_torch": round(seconds["torch"], 1),
        "seconds_onnx": round(seconds["onnx"], 1),
        "export_and_first_pass_seconds": round(export_s, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join([*FOLDERS, *SYNTHETIC]))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "runtimes.json"))
    args = ap.parse_args(argv)
    import os

    import torch
    from _results import merge_result

    torch.set_num_threads(args.threads)
    for model in args.models.split(","):
        folder = FOLDERS.get(model)
        if folder is not None and not folder.is_dir():
            print(f"{model}: {folder} not found, skipped")
            continue
        row = compare(model, folder)
        row.update(threads=args.threads, load_average=round(os.getloadavg()[0], 2))
        print(model, json.dumps(row), flush=True)
        merge_result(args.out, model, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
