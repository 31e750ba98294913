"""Other ways to run a network on the CPU, against the default (ONNX Runtime, float32).

    python benchmarks/cpu_options.py [--models culture-multilabel,phase-cells]
        [--threads 2] [--repeats 7] [--no-dice]

Needs ``pip install openvino`` for the OpenVINO arm (not a dependency of the
plugin; the arm is skipped without it). For each model, one forward pass of the
tile a 1392×1040 field is segmented with (608², batch 1), the median of
``--repeats`` with every arm run once per repeat in turn (so all see the same
load), and the largest difference of any probability from torch eager:

- ``torch``: eager, float32 (the reference);
- ``torch channels-last``: the network and its input in channels-last memory;
- ``torch.compile``: inductor on the CPU (compiled once, before timing);
- ``onnx``: ONNX Runtime, float32 (the plugin's default on a CPU);
- ``openvino``: OpenVINO's CPU plugin reading the same ONNX file, float32
  precision hint (its default on this CPU would be bf16 where supported);
- ``onnx int8``: ONNX Runtime after static post-training quantisation (QDQ,
  per-channel weights, calibrated on 16 tiles of the model's own training images).

With the int8 arm the script also segments ``phase-cells``' test split (the card's
9 images, object size estimated as in ``cultureseg evaluate``) with ONNX float32
and with int8: issue 15 keeps int8 only if Dice drops by at most 0.005.
Writes benchmarks/results/cpu_options.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TILE = 608


def training_tiles(bundle, n: int = 16) -> list[np.ndarray]:
    """``n`` model-input tiles (1, C, TILE, TILE) from the model's own training images."""
    from napari_cultureseg.core.images import as_plane, read_image
    from napari_cultureseg.core.model_input import to_model_input
    from napari_cultureseg.core.synth.data import parse_name

    names = bundle.config.lineage["data"]["train"]["names"]
    rng = np.random.default_rng(0)
    tiles = []
    for name in names[: max(1, n // 2)]:
        if name.startswith("culture-"):
            from napari_cultureseg.core.synth.data import generate

            kind, seed = parse_name(name)
            plane = generate(kind, seed)[0]
        else:
            plane = read_image(DATA / "phase_usiigaci" / f"{name}_image.tif")
        x = to_model_input(as_plane(plane), bundle.config.input)
        x = np.pad(x, ((0, 0), (0, max(0, TILE - x.shape[1])), (0, max(0, TILE - x.shape[2]))))
        for _ in range(2):
            y = rng.integers(0, x.shape[1] - TILE + 1)
            x0 = rng.integers(0, x.shape[2] - TILE + 1)
            tiles.append(np.ascontiguousarray(x[None, :, y : y + TILE, x0 : x0 + TILE]))
    return tiles


def quantise(onnx_path: Path, tiles, out: Path) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(tiles)

        def get_next(self):
            t = next(self.it, None)
            return None if t is None else {"input": t}

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def ort_predictor(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda b: session.run(None, {name: np.ascontiguousarray(b, np.float32)})[0]


def arms_for(bundle, threads: int, work: Path, int8: bool) -> dict:
    import torch

    from napari_cultureseg.core.runtimes import onnx_file

    net = bundle.network("cpu").eval()
    arms = {}

    def eager(b):
        with torch.inference_mode():
            return torch.sigmoid(net(torch.from_numpy(b))).numpy()

    arms["torch"] = eager
    cl = bundle.build().eval().to(memory_format=torch.channels_last)

    def channels_last(b):
        with torch.inference_mode():
            x = torch.from_numpy(b).contiguous(memory_format=torch.channels_last)
            return torch.sigmoid(cl(x)).numpy()

    arms["torch channels-last"] = channels_last
    try:
        compiled = torch.compile(bundle.build().eval(), backend="inductor")

        def comp(b):
            with torch.inference_mode():
                return torch.sigmoid(compiled(torch.from_numpy(b))).numpy()

        comp(np.zeros((1, bundle.config.input.channels, TILE, TILE), np.float32))
        arms["torch.compile"] = comp
    except Exception as exc:  # no compiler, or inductor cannot build this network
        print(f"torch.compile skipped: {type(exc).__name__}: {exc}", flush=True)
    path = onnx_file(bundle)
    arms["onnx"] = ort_predictor(path, threads)
    try:
        import openvino as ov

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        compiled_ov = core.compile_model(core.read_model(str(path)), "CPU", cfg)
        arms["openvino"] = lambda b: compiled_ov([np.ascontiguousarray(b, np.float32)])[0]
    except ImportError:
        print("openvino not installed: pip install openvino", flush=True)
    if int8:
        q = quantise(path, training_tiles(bundle), work / f"{bundle.config.name}-int8.onnx")
        arms["onnx int8"] = ort_predictor(q, threads)
    return arms


def int8_dice(bundle, int8_predict, threads: int) -> dict:
    """Test-split Dice of ``bundle`` with ONNX float32 and with the int8 network."""
    from napari_cultureseg.core import metrics as M
    from napari_cultureseg.core import runtimes
    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.scale import estimate_diameter
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    names = [c.name for c in bundle.config.classes]
    truths = truth_from_folder(
        DATA / "phase_usiigaci", names, only=set(bundle.config.card["test_ids"])
    )
    masks = {"onnx": [], "onnx int8": []}
    zooms = [estimate_diameter(bundle, t.image, device="cpu").zoom for t in truths]
    for arm in masks:
        runtimes._SESSIONS.pop(bundle, None)
        if arm == "onnx int8":  # the runtime's own session cache, holding the int8 network
            runtimes._SESSIONS[bundle] = {threads: int8_predict}
        for t, zoom in zip(truths, zooms, strict=True):
            seg = run_to_end(segment(bundle, t.image, device="cpu", zoom=zoom, runtime="onnx"))
            masks[arm].append(seg.masks()[names[0]].ravel())
    runtimes._SESSIONS.pop(bundle, None)
    ref = np.concatenate([np.asarray(t.masks[names[0]]).ravel() > 0 for t in truths])
    dice = {arm: float(M.dice(np.concatenate(m), ref)) for arm, m in masks.items()}
    return {
        "test_images": len(truths),
        "class": names[0],
        "dice": dice,
        "drop": dice["onnx"] - dice["onnx int8"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="culture-multilabel,phase-cells")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_options.json"))
    args = ap.parse_args(argv)
    import torch

    from napari_cultureseg.core.bundles import load_bundle

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cultureseg-cpu-"))
    result = {
        "threads": args.threads,
        "tile": TILE,
        "load_average_at_start": list(os.getloadavg()),
        "models": {},
    }
    for name in args.models.split(","):
        bundle = load_bundle(name)
        arms = arms_for(bundle, args.threads, work, not args.no_int8)
        x = training_tiles(bundle, n=2)[0]
        ref = arms["torch"](x)
        for fn in arms.values():
            fn(x)  # warm-up
        times = {k: [] for k in arms}
        for _ in range(args.repeats):
            for k, fn in arms.items():
                s = time.perf_counter()
                fn(x)
                times[k].append(time.perf_counter() - s)
        row = {}
        for k, fn in arms.items():
            med = statistics.median(times[k])
            row[k] = {
                "seconds": med,
                "onnx_over_this": statistics.median(times["onnx"]) / med,
                "max_probability_difference": float(np.abs(fn(x) - ref).max()),
            }
            print(f"{name:20s} {k:22s} {med:.3f} s  x{row[k]['onnx_over_this']:.2f} of onnx  "
                  f"max|dp| {row[k]['max_probability_difference']:.1e}", flush=True)  # fmt: skip
        if "onnx int8" in arms and name == "phase-cells":
            row["int8_test_dice"] = int8_dice(bundle, arms["onnx int8"], args.threads)
            print(json.dumps(row["int8_test_dice"]), flush=True)
        result["models"][name] = row
    result["load_average_at_end"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
