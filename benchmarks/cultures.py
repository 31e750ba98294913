"""Rahkonen et al.'s Tables 2-3 for the two six-class models, on held-out synthetic cultures.

    python benchmarks/cultures.py [MULTILABEL PER_CLASS] [--n-test 8]

Two bundles (names or folders; default culture-multilabel and culture-per-class,
trained from configs/culture-*.yaml) segment held-out synthetic cultures
(synth.culture, 1040×1392 RGB, seeds 1000, 1001, ... reserved for tests and never
used for training or validation). For each model and class, pooled over the test
images, as in Rahkonen et al.'s Tables 2-3: sensitivity, specificity, AUC with its 95 %
interval (Hanley-McNeil, optimistic for pixels) and DSC at threshold 0.5, and
sensitivity, specificity and DSC at the threshold chosen on the model's own
VALIDATION seeds (Youden's J on their ROC; Rahkonen et al. 2020 had no validation set and
wished it had), applied unchanged to the test seeds. Youden's J ignores how rare a
class is and picks thresholds near 0 for I, IP and R (thousands of false positives
for a few true ones), so the threshold that maximises DSC on the same validation
seeds is reported too; ``--write-thresholds`` stores those in the bundle (the one
that ships), since a user sees masks, not ROC points. Also per-image DSC and
AUC, and the seconds to segment one 1392×1040 image (whole ``segment`` path,
median of 3 after a warm-up) with 1 torch thread and with all threads.
Writes benchmarks/results/cultures.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1040, 1392)


def synthetic_seeds(names) -> list[int]:
    """Seeds of the synthetic culture images among sample names (others are ignored)."""
    from napari_cultureseg.core.synth.data import parse_name

    return sorted(p[1] for p in map(parse_name, names) if p and p[0] == "culture")


def check_held_out(bundle, test_seeds) -> list[int]:
    """The bundle's validation seeds; refuses test seeds it was trained or validated on."""
    lin = bundle.config.lineage.get("data", {})
    seen = set(synthetic_seeds(lin.get("train", {}).get("names", [])))
    val_names = bundle.config.card.get("validation_ids") or lin.get("val", {}).get("names", [])
    val = synthetic_seeds(val_names)
    clash = sorted((seen | set(val)) & set(test_seeds))
    if clash:
        raise SystemExit(f"{bundle.config.name} was trained or validated on test seeds {clash}")
    if not val:
        raise SystemExit(
            f"{bundle.config.name} records no synthetic validation seeds (card validation_ids); "
            "train it with configs/culture-*.yaml"
        )
    return val


def probabilities(bundle, image) -> np.ndarray:
    """``(K, H, W)`` probabilities of one image through the whole ``segment`` path."""
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    return run_to_end(segment(bundle, image, device="cpu")).probabilities


def predict_set(bundle, seeds) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and truths ``(N, K, H, W)`` of the synthetic cultures with ``seeds``."""
    from napari_cultureseg.core.synth.data import generate

    probs, truths = [], []
    for seed in seeds:
        image, masks = generate("culture", seed, shape=SHAPE, rgb=True)
        probs.append(probabilities(bundle, image)[: len(bundle.config.classes)])
        truths.append(np.stack([masks[c.name] for c in bundle.config.classes]))
    return np.stack(probs), np.stack(truths)


def _clean(v):
    """JSON has no NaN: absent classes (no positive pixel) are null."""
    return None if isinstance(v, float) and math.isnan(v) else v


def class_rows(bundle, val, test) -> dict:
    """Rahkonen et al.'s table for one model: ``{class: figures}`` pooled over the test images."""
    from napari_cultureseg.core import metrics

    (pv, tv), (pt, tt) = val, test
    rows = {}
    for k, spec in enumerate(bundle.config.classes):
        try:
            thr = metrics.roc_threshold(pv[:, k], tv[:, k])
        except ValueError:  # class absent from every validation image
            thr = 0.5
        try:
            dthr = metrics.dice_threshold(pv[:, k], tv[:, k])
        except ValueError:
            dthr = 0.5
        at_half = metrics.binary_report(pt[:, k], tt[:, k], threshold=0.5)
        dpred = pt[:, k] >= dthr
        pred = pt[:, k] >= thr
        per_image = []
        for p, t in zip(pt[:, k], tt[:, k], strict=True):
            a, lo, hi = metrics.auc_ci(p, t)
            per_image.append(
                {
                    "present": bool(t.any()),
                    "dice_at_0.5": metrics.dice(p >= 0.5, t),
                    "dice_at_roc_threshold": metrics.dice(p >= thr, t),
                    "auc": _clean(a),
                }
            )
        rows[spec.name] = {
            "positive_fraction": float(tt[:, k].mean()),
            **{k2: _clean(v) for k2, v in at_half.items()},
            "roc_threshold_from_validation": thr,
            "sensitivity_at_roc_threshold": _clean(metrics.sensitivity(pred, tt[:, k])),
            "specificity_at_roc_threshold": _clean(metrics.specificity(pred, tt[:, k])),
            "dice_at_roc_threshold": metrics.dice(pred, tt[:, k]),
            "dice_threshold_from_validation": dthr,
            "sensitivity_at_dice_threshold": _clean(metrics.sensitivity(dpred, tt[:, k])),
            "specificity_at_dice_threshold": _clean(metrics.specificity(dpred, tt[:, k])),
            "dice_at_dice_threshold": metrics.dice(dpred, tt[:, k]),
            "dice_per_image_mean_at_0.5": float(np.mean([r["dice_at_0.5"] for r in per_image])),
            "per_image": per_image,
        }
    return rows


def seconds(bundle, image, threads: int, repeats: int = 3) -> dict:
    """Median seconds of ``segment`` + masks on one image with ``threads`` torch threads."""
    import torch

    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:

        def once():
            t = time.perf_counter()
            run_to_end(segment(bundle, image, device="cpu")).masks()
            return time.perf_counter() - t

        once()  # warm-up: the network is built and memory allocated
        times = [once() for _ in range(repeats)]
    finally:
        torch.set_num_threads(before)
    return {"threads": threads, "median": statistics.median(times), "all": times}


def format_table(name: str, rows: dict) -> str:
    """Rahkonen et al.'s Table 2 layout, with the validation-chosen threshold's columns added."""

    def f(v):
        return "  n/a" if v is None else f"{v:.3f}"

    lines = [
        name,
        f"{'class':5s} {'sens':>5s} {'spec':>5s} {'AUC [95% CI]':>21s} {'DSC':>5s} | "
        f"{'thr':>5s} {'sens':>5s} {'spec':>5s} {'DSC':>5s} | {'thr':>5s} {'DSC':>5s}",
    ]
    for c, r in rows.items():
        auc = "n/a"
        if r["auc"] is not None:
            auc = f"{r['auc']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]"
        lines.append(
            f"{c:5s} {f(r['sensitivity'])} {f(r['specificity'])} {auc:>21s} {f(r['dice'])} | "
            f"{r['roc_threshold_from_validation']:5.3f} {f(r['sensitivity_at_roc_threshold'])} "
            f"{f(r['specificity_at_roc_threshold'])} {f(r['dice_at_roc_threshold'])} | "
            f"{r['dice_threshold_from_validation']:5.3f} {f(r['dice_at_dice_threshold'])}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "models",
        nargs="*",
        default=["culture-multilabel", "culture-per-class"],
        help="bundle names or folders (default: the two culture models)",
    )
    ap.add_argument("--n-test", type=int, default=8, help="held-out test images (seeds 1000, ...)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per thread setting")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads for the metric predictions"
    )
    ap.add_argument(
        "--timing-threads",
        type=int,
        nargs="+",
        default=None,
        help="thread counts to time segmentation with (default: 1 and all cores)",
    )
    ap.add_argument(
        "--write-thresholds",
        metavar="MODEL",
        default=None,
        help="store the validation max-DSC thresholds in this bundle (one of MODELS)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cultures.json"))
    args = ap.parse_args(argv)

    import torch

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.synth.data import TEST_SEEDS, generate

    if not 1 <= args.n_test <= len(TEST_SEEDS):
        raise SystemExit(f"--n-test must be 1..{len(TEST_SEEDS)}")
    test_seeds = list(TEST_SEEDS[: args.n_test])
    timing_image = generate("culture", test_seeds[0], shape=SHAPE, rgb=True)[0]
    all_threads = os.cpu_count() or 1
    result = {
        "test": {
            "generator": "synth.culture.culture",
            "seeds": test_seeds,
            "shape": list(SHAPE),
            "rgb": True,
        },
        "machine": f"{platform.machine()}, torch {torch.__version__}, {all_threads} cores",
        "load_average_at_start": list(os.getloadavg()),
        "models": {},
    }
    tables = []
    torch.set_num_threads(args.threads)
    for name in args.models:
        bundle = load_bundle(name)
        val_seeds = check_held_out(bundle, test_seeds)
        t0 = time.perf_counter()
        rows = class_rows(bundle, predict_set(bundle, val_seeds), predict_set(bundle, test_seeds))
        print(
            f"{bundle.config.name}: {len(val_seeds)} validation + {len(test_seeds)} test images "
            f"in {time.perf_counter() - t0:.0f} s"
        )
        timing = [
            seconds(bundle, timing_image, n, args.repeats)
            for n in sorted(set(args.timing_threads or (1, all_threads)))
        ]
        lin = bundle.config.lineage
        result["models"][bundle.config.name] = {
            "path": str(bundle.path),
            "architecture": bundle.config.architecture,
            "params": bundle.config.params,
            "parameters": int(sum(v.numel() for v in bundle.state_dict().values())),
            "trained": {k: lin.get(k) for k in ("steps", "seconds", "best_step", "stopped")},
            "validation_seeds": val_seeds,
            "classes": rows,
            "mean_dice_at_0.5": float(np.mean([r["dice"] for r in rows.values()])),
            "mean_dice_at_roc_threshold": float(
                np.mean([r["dice_at_roc_threshold"] for r in rows.values()])
            ),
            "mean_dice_at_dice_threshold": float(
                np.mean([r["dice_at_dice_threshold"] for r in rows.values()])
            ),
            "seconds_1392x1040": timing,
        }
        if args.write_thresholds in (name, bundle.config.name):
            from napari_cultureseg.core.cards import record_thresholds

            record_thresholds(
                bundle.path,
                {c: r["dice_threshold_from_validation"] for c, r in rows.items()},
                f"maximum pooled DSC on the validation seeds {val_seeds[0]}-{val_seeds[-1]} "
                "(benchmarks/cultures.py --write-thresholds)",
            )
            print(f"thresholds written to {bundle.path / 'config.json'}")
        tables.append(
            format_table(bundle.config.name, rows)
            + "\n"
            + "; ".join(f"{t['threads']} thread(s): {t['median']:.2f} s" for t in timing)
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nPooled over {len(test_seeds)} held-out synthetic cultures {SHAPE[1]}x{SHAPE[0]} "
        f"(seeds {test_seeds[0]}-{test_seeds[-1]}); left: threshold 0.5, right: threshold "
        "chosen on the validation seeds by Youden's J, then by maximum DSC\n"
    )
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
