"""The speed report: how long every bundled model takes per image on this machine.

    python benchmarks/speed.py [--threads 1,2] [--repeats 5] [--models A,B]
                               [--no-seed000] [--no-cold]

One run measures, and writes to benchmarks/results/speed.json with the load
average at its start and end (figures from a busy machine say so there):

- **matmul**: this machine's float32 matrix product rate (4096², torch) per
  thread count, the ceiling a network's forward pass is compared against.
- **models**: per bundled model, runtime (torch eager, ONNX Runtime) and thread
  count, the whole ``segment`` path (normalisation, tiles, thresholds,
  post-processing) on a 1024² image and on a 1392×1040 field (Rahkonen et al.
  2022's Cell-IQ frame size), the median of ``--repeats`` after one warm-up, the
  runtimes alternated within each repeat so both see the same load; and the
  network alone, one forward pass on the tile the path uses: its FLOPs counted
  by torch's ``FlopCounterMode`` and the rate achieved against the matmul rate.
- **tiling**: culture-multilabel on the field, probabilities only: our default
  (ONNX Runtime, tiles grown to fit the image) against MONAI's
  ``sliding_window_inference`` (512², overlap 0.25, Gaussian; the same network
  in torch) and against Rahkonen et al.'s 900 tiles of 512² averaged uniformly
  (once, at the most threads).
- **cold start**: ``cultureseg segment`` on one 1024² image, from process start
  to the mask on disk, in fresh processes (median of 3): with torch; with ONNX
  Runtime and an empty export cache (a user's very first run); with ONNX Runtime
  and the cache filled (every later run, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIELD = (1040, 1392)
RUNTIMES = ("torch", "onnx")


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def network_rate(bundle, predict, shape) -> dict:
    """FLOPs of one forward pass at ``shape`` (C, H, W) and the rate ``predict`` reaches."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        bundle.network("cpu")(torch.from_numpy(x))
    flops = fc.get_total_flops()
    predict(x)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    return {"input": list(shape), "gflop": flops / 1e9, "seconds": s, "gflops": flops / s / 1e9}


def images():
    from napari_cultureseg.core.synth import phase_culture
    from napari_cultureseg.core.synth.culture import culture

    gray = phase_culture((1024, 1024), seed=0)[0]
    field = culture(FIELD, seed=1000)[0]  # RGB, a test seed of the culture benchmark
    return {"1024x1024": gray, "1392x1040": field}


def as_input(bundle, image):
    """The image in the form the bundle reads (gray or RGB)."""
    channels = bundle.config.input.channels
    if image.ndim == 3 and channels == 1:
        return image.mean(-1).astype(image.dtype)
    if image.ndim == 2 and channels == 3:
        return np.stack([image] * 3, -1)
    return image


def time_models(names, threads, repeats, must_show, shapes) -> dict:
    import torch

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.images import as_plane
    from napari_cultureseg.core.model_input import to_model_input
    from napari_cultureseg.core.nets import output_stride
    from napari_cultureseg.core.runtimes import predictor_for
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import fit_tile, run_to_end

    rows = {}
    for name in names:
        bundle = load_bundle(name)
        rows[name] = row = {"parameters": sum(v.numel() for v in bundle.state_dict().values())}
        n = repeats if name == must_show else max(3, repeats - 2)
        for t in threads:
            torch.set_num_threads(t)
            for size, image in shapes.items():
                image = as_input(bundle, image)

                def once(rt, bundle=bundle, image=image):
                    s = time.perf_counter()
                    run_to_end(segment(bundle, image, device="cpu", runtime=rt)).masks()
                    return time.perf_counter() - s

                for rt in RUNTIMES:
                    once(rt)  # warm-up: sessions, allocations, oneDNN kernels
                times = {rt: [] for rt in RUNTIMES}
                for _ in range(n):
                    for rt in RUNTIMES:
                        times[rt].append(once(rt))
                cell = {rt: {"seconds": statistics.median(v), "all": v} for rt, v in times.items()}
                cell["onnx_over_torch"] = cell["torch"]["seconds"] / cell["onnx"]["seconds"]
                row[f"{size}, {t} thread{'s' * (t > 1)}"] = cell
                print(
                    f"{name:26s} {size} {t}t: torch {cell['torch']['seconds']:.2f} s, "
                    f"onnx {cell['onnx']['seconds']:.2f} s (x{cell['onnx_over_torch']:.2f})",
                    flush=True,
                )
            # the network alone on the tile the field's path uses
            x = to_model_input(as_plane(as_input(bundle, shapes["1392x1040"])), bundle.config.input)
            if bundle.config.input.resize_to:
                r = bundle.config.input.resize_to
                shape = (x.shape[0], r, r)
            else:
                align = output_stride(bundle.config.architecture, bundle.config.params)
                tile, _ = fit_tile(x.shape[1:], bundle.config.tile, bundle.config.overlap, align)
                shape = (x.shape[0], tile, tile)
            row[f"network, {t} thread{'s' * (t > 1)}"] = {
                rt: network_rate(bundle, predictor_for(bundle, "cpu", rt).predict, shape)
                for rt in RUNTIMES
            }
    return rows


def time_tiling(threads, repeats, seed000: bool) -> dict:
    import torch
    from benchmarks.tiling import seed000_tiled
    from monai.inferers import sliding_window_inference

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.images import as_plane
    from napari_cultureseg.core.model_input import to_model_input
    from napari_cultureseg.core.nets import output_stride
    from napari_cultureseg.core.runtimes import predictor_for
    from napari_cultureseg.core.synth.culture import culture
    from napari_cultureseg.core.tiling import fit_tile, predict_tiled, run_to_end

    bundle = load_bundle("culture-multilabel")
    x = to_model_input(as_plane(culture(FIELD, seed=1000)[0]), bundle.config.input)
    align = output_stride(bundle.config.architecture, bundle.config.params)
    tile, overlap = fit_tile(x.shape[1:], bundle.config.tile, bundle.config.overlap, align)
    net = bundle.network("cpu")
    out = {"tile (ours)": tile, "overlap (ours)": round(overlap, 4), "batch": 1}
    for t in threads:
        torch.set_num_threads(t)
        predictors = {rt: predictor_for(bundle, "cpu", rt).predict for rt in RUNTIMES}

        # segment's own tiling: tiles grown to fit, one per pass on a CPU
        def ours(rt, predictors=predictors):
            return run_to_end(
                predict_tiled(
                    x, predictors[rt], tile=tile, overlap=overlap, align=align, batch_size=1
                )
            )

        def monai():
            with torch.inference_mode():
                p = sliding_window_inference(
                    torch.from_numpy(x[None]),
                    roi_size=(512, 512),
                    sw_batch_size=1,
                    predictor=lambda b: torch.sigmoid(net(b)),
                    overlap=0.25,
                    mode="gaussian",
                    sigma_scale=0.125,
                    padding_mode="reflect",
                )
            return p[0].numpy()

        arms = {"ours (onnx)": lambda: ours("onnx"), "ours (torch)": lambda: ours("torch")}
        arms["monai (torch)"] = monai
        for fn in arms.values():
            fn()
        times = {k: [] for k in arms}
        for _ in range(repeats):
            for k, fn in arms.items():
                s = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - s)
        med = {k: statistics.median(v) for k, v in times.items()}
        cell = {"seconds": med, "all": times}
        cell["monai_over_ours"] = med["monai (torch)"] / med["ours (onnx)"]
        cell["torch_over_ours"] = med["ours (torch)"] / med["ours (onnx)"]
        out[f"{t} thread{'s' * (t > 1)}"] = cell
        print(f"tiling {t}t: {json.dumps({k: round(v, 2) for k, v in med.items()})}", flush=True)
    if seed000:
        t = max(threads)
        torch.set_num_threads(t)
        predict = bundle.predictor("cpu")
        s = time.perf_counter()
        seed000_tiled(x, predict, tile=512, batch=1)
        sec = time.perf_counter() - s
        key = f"{t} thread{'s' * (t > 1)}"
        out[key]["seconds"]["seed000 900 tiles (torch)"] = sec
        out[key]["seed000_over_ours"] = sec / out[key]["seconds"]["ours (onnx)"]
        print(f"seed000 {t}t: {sec:.1f} s", flush=True)
    return out


def cold_start(repeats: int = 3) -> dict:
    """`cultureseg segment` on one 1024² image in fresh processes: start to mask on disk."""
    import tifffile

    from napari_cultureseg.core.synth import phase_culture

    work = Path(tempfile.mkdtemp(prefix="cultureseg-cold-"))
    image = work / "field.tif"
    tifffile.imwrite(image, phase_culture((1024, 1024), seed=0)[0])
    exe = Path(sys.executable).with_name("cultureseg")
    out = {}
    arms = (("torch", "torch", False), ("onnx, empty cache", "onnx", True))
    arms += (("onnx, cache filled (default)", "auto", False),)
    home = work / "home"
    for label, runtime, fresh in arms:
        times = []
        for i in range(repeats):
            if fresh:
                home = work / f"home{i}"  # a user's first run: nothing exported yet
            dest = work / f"out-{runtime}-{i}"
            # the default model and object size (estimated): what a user's first command runs
            cmd = [str(exe), "segment", str(image), "--out", str(dest), "--runtime", runtime]
            env = dict(os.environ, CULTURESEG_HOME=str(home))
            s = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - s)
            assert any(dest.glob("*.tif")), f"no mask written by {' '.join(cmd)}"
        out[label] = {"seconds": statistics.median(times), "all": times}
        print(f"cold start, {label}: {statistics.median(times):.1f} s", flush=True)
    s = time.perf_counter()
    subprocess.run([str(exe), "--help"], check=True, capture_output=True)
    out["cultureseg --help"] = {"seconds": time.perf_counter() - s}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts, e.g. 1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default=None, help="bundled models, comma-separated")
    ap.add_argument("--no-seed000", action="store_true", help="skip the 900-tile scheme")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold starts")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    threads = sorted({int(t) for t in args.threads.split(",")})

    import onnxruntime
    import torch

    from napari_cultureseg.core.bundles import bundled_dir

    names = (
        args.models.split(",")
        if args.models
        else sorted(p.name for p in bundled_dir().iterdir() if (p / "config.json").is_file())
    )
    load_start = list(os.getloadavg())
    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").is_file()
        else platform.processor()
    )
    result = {
        "cpu": cpu,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}",
        "images": "1024x1024: synth.phase_culture seed 0 (gray); 1392x1040: "
        "synth.culture.culture seed 1000 (RGB); gray models read the RGB field's mean",
        "target": "culture-multilabel, 1392x1040 field, default runtime: <= 1.0 s on 2 cores",
        "load_average_at_start": load_start,
    }
    result["matmul_gflops"] = {}
    for t in threads:
        torch.set_num_threads(t)
        result["matmul_gflops"][str(t)] = matmul_gflops()
    print(f"matmul GFLOP/s: {result['matmul_gflops']}", flush=True)
    if not args.no_cold:  # first, while nothing of ours is in the page cache's favour
        result["cold_start"] = cold_start()
    result["models"] = time_models(names, threads, args.repeats, "culture-multilabel", images())
    if "culture-multilabel" in names:
        result["tiling"] = time_tiling(threads, args.repeats, not args.no_seed000)
    result["load_average_at_end"] = list(os.getloadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
