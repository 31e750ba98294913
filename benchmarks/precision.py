"""Seconds per training step in float32 and in bfloat16 autocast, on this machine.

    python benchmarks/precision.py [--threads N] [--steps S]

One training step as `fine_tune` takes it (batch 4 of 256² patches, one input
channel, two outputs, the masked BCE + Dice loss, AdamW), for the U-Nets the
recipes use (mobilenet_v2 and resnet18 encoders). Each model is timed with
``precision: fp32`` (row-major tensors) and ``precision: bf16`` (autocast,
channels-last), S steps each after two warm-up steps, the two alternating step
by step so that both see the same load; the median is kept and the ratio is
measured in one run. Whether this CPU computes bf16 natively (AMX, AVX512-BF16)
is recorded: without it ``precision: auto`` stays in float32. Writes
benchmarks/results/precision.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENCODERS = {
    "mobilenet_v2": [128, 64, 32, 16, 16],
    "resnet18": [128, 64, 32, 16, 16],
}


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant (default: 8)")
    args = ap.parse_args(argv)
    import torch

    from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.device import native_bf16
    from napari_cultureseg.core.training.losses import masked_loss

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 256, 256, generator=gen)
    t = (torch.rand(4, 2, 256, 256, generator=gen) > 0.7).float()
    v = torch.ones_like(t, dtype=torch.bool)
    rows = {}
    for encoder, decoder in ENCODERS.items():
        cfg = BundleConfig(
            name=encoder,
            architecture="unet",
            classes=(ClassSpec("a"), ClassSpec("b")),
            params={"encoder": encoder, "encoder_depth": 5, "decoder_channels": decoder},
        )
        variants = {}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            net = Bundle(cfg).build().train()
            if precision == "bf16":
                net = net.to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
            variants[precision] = (net, opt, [])

        def step(net, opt, precision):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = net(x).float()
            loss = masked_loss(logits, t, v, class_weighting=False, dice_weight=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for i in range(args.steps + 2):
            for precision, (net, opt, times) in variants.items():
                t0 = time.perf_counter()
                step(net, opt, precision)
                if i >= 2:
                    times.append(time.perf_counter() - t0)
        med = {p: statistics.median(times) for p, (_, _, times) in variants.items()}
        rows[encoder] = {
            "params_M": round(sum(p.numel() for p in variants["fp32"][0].parameters()) / 1e6, 2),
            "fp32_s_per_step": round(med["fp32"], 3),
            "bf16_s_per_step": round(med["bf16"], 3),
            "speedup_bf16": round(med["fp32"] / med["bf16"], 2),
        }
        print(encoder, rows[encoder], flush=True)
    out = {
        "what": "one training step, batch 4 of 256x256, median of the timed steps",
        "threads": args.threads,
        "steps": args.steps,
        "cpu": platform.processor() or platform.machine(),
        "native_bf16": native_bf16("cpu"),
        "torch": torch.__version__,
        "models": rows,
    }
    path = ROOT / "benchmarks" / "results" / "precision.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
