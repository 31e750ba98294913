"""Tiled inference: our scheme against Rahkonen et al.'s and MONAI's, in one run.

    python benchmarks/tiling.py [--model NAME] [--image PATH]

Times, on one 1022×1024 image and one model (the default bundle):
  ours    Gaussian-weighted tiles, last tile flush, batched (core.tiling)
  seed000 512² tiles at 30×30 linearly spaced positions, uniform averaging
  monai   monai.inferers.sliding_window_inference, Gaussian, same tile and overlap
and the seam error |tiled − whole| against one whole-image pass (the 1022×1024
image is small enough: it is padded to 1024² as a U-Net needs), as max, 99.9th
percentile, mean, and the fraction of pixels whose mask (p > 0.5) differs.
Writes benchmarks/results/tiling.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "phase_usiigaci" / "set01_image.tif"


def seed000_tiled(
    x: np.ndarray, predict, tile: int = 512, n: int = 30, batch: int = 2
) -> np.ndarray:
    """Rahkonen et al.'s scheme: n×n tiles, linearly spaced, outputs averaged uniformly."""
    _, h, w = x.shape
    ys = np.linspace(0, h - tile, n).round().astype(int)
    xs = np.linspace(0, w - tile, n).round().astype(int)
    pos = [(y, x0) for y in ys for x0 in xs]
    acc, cnt = None, np.zeros((h, w), np.float32)
    for i in range(0, len(pos), batch):
        chunk = pos[i : i + batch]
        out = predict(np.stack([x[:, y : y + tile, x0 : x0 + tile] for y, x0 in chunk]))
        if acc is None:
            acc = np.zeros((out.shape[1], h, w), np.float32)
        for (y, x0), o in zip(chunk, out, strict=True):
            acc[:, y : y + tile, x0 : x0 + tile] += o
            cnt[y : y + tile, x0 : x0 + tile] += 1
    return acc / cnt


def whole(x: np.ndarray, predict) -> np.ndarray:
    """One forward pass over the whole image (reflect-padded to a multiple of 32)."""
    _, h, w = x.shape
    ph, pw = (-h) % 32, (-w) % 32
    xp = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
    return predict(xp[None])[0][:, :h, :w]


def timed(fn, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--image", default=str(SHARED))
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=1, help="tiles per forward pass, the same for all")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tiling.json"))
    args = ap.parse_args(argv)

    import torch
    from monai.inferers import sliding_window_inference

    from napari_cultureseg.core.bundles import DEFAULT_MODEL, load_bundle
    from napari_cultureseg.core.images import read_image
    from napari_cultureseg.core.model_input import to_model_input
    from napari_cultureseg.core.nets import output_stride
    from napari_cultureseg.core.synth import phase_culture
    from napari_cultureseg.core.tiling import predict_tiled, run_to_end

    bundle = load_bundle(args.model or DEFAULT_MODEL)
    if Path(args.image).is_file():
        plane, image_name = read_image(args.image), Path(args.image).name
    else:
        plane, image_name = phase_culture((1022, 1024), seed=0)[0], "synthetic 1022x1024 (seed 0)"
    x = to_model_input(plane, bundle.config.input)
    predict = bundle.predictor("cpu")
    net = bundle.network("cpu")
    print(
        f"model {bundle.config.name}, image {image_name} {x.shape}, "
        f"torch threads {torch.get_num_threads()}"
    )

    stride = output_stride(bundle.config.architecture, bundle.config.params)

    def ours():
        return run_to_end(
            predict_tiled(
                x,
                predict,
                tile=args.tile,
                overlap=args.overlap,
                batch_size=args.batch,
                align=stride,
            )
        )

    def monai():
        with torch.inference_mode():
            t = torch.from_numpy(x[None])
            out = sliding_window_inference(
                t,
                roi_size=(args.tile, args.tile),
                sw_batch_size=args.batch,
                predictor=lambda b: torch.sigmoid(net(b)),
                overlap=args.overlap,
                mode="gaussian",
                sigma_scale=0.125,
                padding_mode="reflect",
            )
        return out[0].numpy()

    ours()  # warm-up: first calls allocate
    monai()
    # interleaved repeats, medians: both methods see the same machine state
    times = {"ours": [], "monai": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("monai", monai)):
            t = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t)
            if name == "ours":
                p_ours = out
            else:
                p_monai = out
    t_ours, t_monai = (float(np.median(times[k])) for k in ("ours", "monai"))
    print(f"ours {t_ours:.2f} s, monai {t_monai:.2f} s (medians of {args.repeats})")
    t_seed, p_seed = timed(lambda: seed000_tiled(x, predict, tile=args.tile, batch=args.batch))
    print(f"seed000 {t_seed:.2f} s")

    p_whole = whole(x, predict)

    def seam(p):
        e = np.abs(p - p_whole)
        return {
            "max": float(e.max()),
            "p99_9": float(np.percentile(e, 99.9)),
            "mean": float(e.mean()),
            "mask_disagreement": float(((p > 0.5) != (p_whole > 0.5)).mean()),
        }

    seams = {"ours": seam(p_ours), "monai": seam(p_monai), "seed000": seam(p_seed)}
    print(json.dumps(seams, indent=2))

    result = {
        "model": bundle.config.name,
        "model_trained": bool(bundle.config.lineage.get("steps")),
        "image": image_name,
        "shape": list(x.shape),
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{platform.python_version()}",
        "seconds_all": times,
        "seconds": {"ours": t_ours, "seed000_30x30_uniform": t_seed, "monai_gaussian": t_monai},
        "speedup_vs_seed000": t_seed / t_ours,
        "ratio_monai_over_ours": t_monai / t_ours,
        "align": stride,
        "seam_error_vs_whole_image": seams,
        "seam_error_max": seams["ours"]["max"],
    }
    from _results import write_result

    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
