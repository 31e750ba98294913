"""Sadanandan et al.'s Table 2 on synthetic spheroid wells: adversarial vs plain network vs U-Net.

    python benchmarks/spheroids.py [--seconds 1350] [--n-test 50] [--threads 1]
                                   [--bundle adv=PATH] [--bundle base=PATH] [--bundle unet=PATH]

Trains three models on the training wells of ``configs/spheroid-multiscale.yaml``
with the same time budget each, as Sadanandan et al. 2017 compares them:

  adv    the multiscale network with the adversarial loss (the config as it is)
  base   the same network without the adversarial loss ("Base")
  unet   a U-Net with the same weighted loss ("U-Net*"): the engine's ``unet`` as the
         other bundled models use it (MobileNet-v2 encoder, decoder 128…16), 4.1 M
         parameters against the multiscale network's 4.0 M (base 32)

then segments held-out easy and hard test wells (seeds 1000 onwards, never used for
training or validation) at 1080², with Sadanandan et al.'s post-processing for all three
(threshold 120/255, fill holes, drop objects < 64 px at 480², keep the largest),
and reports mean ± std over images of the F-score, precision and recall
(``core.metrics.per_image_prf``). Sadanandan et al. (2017) averages five folds; we train each
model once. Trained bundles are cached in ``benchmarks/results/cache/`` (keyed by
variant, budget and config), or given with ``--bundle``. Writes
``benchmarks/results/spheroids.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "spheroid-multiscale.yaml"
CACHE = ROOT / "benchmarks" / "results" / "cache"
VARIANTS = ("adv", "base", "unet")
LABELS = {"adv": "Adver", "base": "Base", "unet": "U-Net*"}
UNET = {"encoder": "mobilenet_v2", "encoder_depth": 5, "decoder_channels": [128, 64, 32, 16, 16]}
PAPER = {  # Sadanandan et al. 2017, Table 2: mean ± std of F-score, precision, recall (%)
    "easy": {
        "adv": [(77.09, 6.89), (82.16, 6.00), (73.07, 7.40)],
        "base": [(68.79, 19.72), (73.02, 20.15), (65.67, 19.47)],
        "unet": [(49.24, 19.38), (52.80, 20.14), (46.53, 18.77)],
    },
    "hard": {
        "adv": [(64.21, 4.79), (66.33, 4.31), (66.85, 5.11)],
        "base": [(50.55, 20.47), (51.84, 20.13), (55.56, 25.99)],
        "unet": [(36.53, 24.03), (38.24, 24.72), (40.99, 28.29)],
    },
}
KEYS = ("f_score", "precision", "recall")


def variant_config(recipe, variant: str, seconds: float, threads: int):
    """The (model, TrainConfig) of one of the three models, with the common budget."""
    # the same budget for all: no early stopping (the best validated weights are kept)
    model = replace(recipe.model, name=f"spheroid-{variant}")
    config = replace(
        recipe.training, max_seconds=seconds, threads=threads, early_stop_patience=None
    )
    if variant == "adv":
        return model, replace(config, adversarial=True)
    if variant == "base":
        return model, replace(config, adversarial=False)
    if variant == "unet":
        return (
            replace(model, architecture="unet", params=dict(UNET)),
            replace(config, adversarial=False),
        )
    raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")


def cache_path(variant: str, seconds: float, config_text: str) -> Path:
    key = hashlib.sha1(f"{variant}|{seconds}|{config_text}".encode()).hexdigest()[:10]
    return CACHE / f"spheroid-{variant}-{int(seconds)}s-{key}"


def train(variant, config, train_set, val_set, seconds, threads, config_text, retrain=False):
    """A trained bundle of ``variant``: from the cache, or trained now and cached."""
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.training import run_training

    path = cache_path(variant, seconds, config_text)
    if path.is_dir() and not retrain:
        print(f"{variant}: cached {path.name}", flush=True)
        return Bundle.load(path)
    model, cfg = variant_config(config, variant, seconds, threads)
    t0 = time.perf_counter()

    def report(r):
        if r.val_dice:
            adv = (
                f", λ {r.adversarial['lambda']:.3f} D loss {r.adversarial['discriminator']:.3f}"
                if r.adversarial
                else ""
            )
            print(
                f"  {variant} step {r.step} {r.seconds:.0f}s loss {r.loss:.4f} "
                f"val Dice {r.val_dice.get('spheroid', float('nan')):.3f}{adv}",
                flush=True,
            )

    bundle = run_training(model, cfg, train_set, val_set, on_report=report)
    print(
        f"{variant}: trained {bundle.config.lineage['steps']} steps in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    bundle.save(path, overwrite=True)
    return bundle


def test_wells(n: int, size: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """``n`` easy and ``n`` hard held-out wells (seeds 1000 … 1000+n-1)."""
    from napari_cultureseg.core.synth.data import TEST_SEEDS, generate

    seeds = TEST_SEEDS[:n]
    out = {}
    for level in ("easy", "hard"):
        out[level] = []
        for s in seeds:
            image, masks = generate(f"spheroid-{level}", s, shape=(size, size), rgb=False)
            out[level].append((image, masks["spheroid"]))
    return out


def evaluate(bundle, wells, paper_spec, threads: int) -> dict:
    """Per-image P/R/F of ``bundle`` with Sadanandan et al.'s post-processing, per test set."""
    import torch

    from napari_cultureseg.core.metrics import mean_std_records, per_image_prf
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    torch.set_num_threads(threads)
    bundle = bundle.with_config(classes=(paper_spec,))
    out = {}
    for level, pairs in wells.items():
        t0 = time.perf_counter()
        preds = [
            run_to_end(segment(bundle, im, device="cpu")).masks()["spheroid"] for im, _ in pairs
        ]
        seconds = (time.perf_counter() - t0) / len(pairs)
        prf = per_image_prf(preds, [m for _, m in pairs])
        stats = mean_std_records(prf, KEYS)
        out[level] = {
            **{k: [100 * stats[k][0], 100 * stats[k][1]] for k in KEYS},
            "n": len(pairs),
            "empty_predictions": int(sum(not p.any() for p in preds)),
            "per_image_f": [round(r["f_score"], 4) for r in prf],
            "seconds_per_image": round(seconds, 3),
        }
    return out


def table(results: dict) -> str:
    head = f"{'model':<8}" + "".join(
        f"{k + ' ' + m:>17}" for k in ("easy", "hard") for m in ("F", "P", "R")
    )
    lines = [head, "-" * len(head)]
    for v, r in results.items():
        cells = []
        for level in ("easy", "hard"):
            for k in KEYS:
                mean, std = r["test"][level][k]
                cells.append(f"{mean:>9.2f} ± {std:5.2f}")
        lines.append(f"{LABELS[v]:<8}" + "".join(cells))
    lines.append("Sadanandan et al. 2017 (their data):")
    for v in VARIANTS:
        cells = [f"{m:>9.2f} ± {s:5.2f}" for level in ("easy", "hard") for m, s in PAPER[level][v]]
        lines.append(f"{LABELS[v]:<8}" + "".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="training budget per model (default: the config's max_seconds)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-test", type=int, default=50, help="test wells per set (easy, hard)")
    ap.add_argument("--test-size", type=int, default=1080)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="VARIANT=PATH",
        help="use this trained bundle for a variant instead of training it",
    )
    ap.add_argument("--retrain", action="store_true", help="ignore cached bundles")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spheroids.json"))
    args = ap.parse_args(argv)

    import torch

    from napari_cultureseg.core.bundle_config import ClassSpec
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.spheroid import MIN_SIZE, THRESHOLD_8BIT
    from napari_cultureseg.core.training import prepare_from_config

    torch.set_num_threads(args.threads)
    given = dict(b.split("=", 1) for b in args.bundle)
    if set(given) - set(VARIANTS):
        ap.error(f"--bundle takes {', '.join(VARIANTS)}=PATH, got {', '.join(given)}")
    config_text = Path(args.config).read_text()
    config, train_set, val_set = None, [], []
    if any(v not in given for v in args.variants):
        t0 = time.perf_counter()
        config = prepare_from_config(args.config)
        train_set, val_set = config.train, config.val
        print(
            f"data: {len(train_set)} training, {len(val_set)} validation wells "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    seconds = args.seconds or (config.training.max_seconds if config else None) or 1350.0
    paper_spec = ClassSpec(
        "spheroid",
        threshold=THRESHOLD_8BIT / 255,
        fill_holes=True,
        min_size=MIN_SIZE,
        largest_only=True,
    )
    t0 = time.perf_counter()
    wells = test_wells(args.n_test, args.test_size)
    print(
        f"test: {args.n_test} easy + {args.n_test} hard wells of {args.test_size}² "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )

    results = {}
    for v in args.variants:
        if v in given:
            bundle = Bundle.load(given[v])
        else:
            bundle = train(
                v, config, train_set, val_set, seconds, args.threads, config_text, args.retrain
            )
        lin = bundle.config.lineage
        net = bundle.build()
        results[v] = {
            "bundle": str(bundle.path) if bundle.path else None,
            "architecture": bundle.config.architecture,
            "params": bundle.config.params,
            "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
            "adversarial": bool(lin.get("training", {}).get("adversarial", False)),
            "steps": lin.get("steps"),
            "seconds": lin.get("seconds"),
            "best_step": lin.get("best_step"),
            "stopped": lin.get("stopped"),
            "val_dice": lin.get("metrics", {}).get("val_dice"),
            "test": evaluate(bundle, wells, paper_spec, args.threads),
        }
        print(
            f"{v}: "
            + ", ".join(
                f"{lvl} F {r['f_score'][0]:.2f} ± {r['f_score'][1]:.2f}"
                for lvl, r in results[v]["test"].items()
            ),
            flush=True,
        )
    print()
    print(table(results))
    out = {
        "what": "Sadanandan et al. 2017, Table 2, on synthetic wells: mean ± std over images (%)",
        "config": Path(args.config).name,
        "budget_seconds_per_model": seconds,
        "threads": args.threads,
        "machine": f"{platform.machine()} CPU, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "test": {
            "seeds": [1000, 1000 + args.n_test - 1],
            "size": args.test_size,
            "post_processing": "threshold 120/255, fill holes, drop < 64 px at 480², largest",
        },
        "results": results,
        "paper_table2": PAPER,
        "command": "python benchmarks/spheroids.py " + " ".join(argv or sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
