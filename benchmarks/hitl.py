"""Human-in-the-loop, simulated honestly: how much do a few corrected fields help?

    python benchmarks/hitl.py [--experiment 210930MA20] [--base-seconds 1800]

1. Train `brightfield-nucleus-cell` from scratch WITHOUT one aiSEGcell experiment
   (all its nucleus_cell and nucleus_only images kept out), with the bundled
   model's config and a time budget (cached in benchmarks/results/cache/).
2. Act as a user on that unseen experiment: for K = 1, 2, 4 fields, "correct"
   them with the ground truth (only those fields' masks are shown to the model,
   every pixel of them reviewed), fine-tune through the same job as the
   Fine-tune widget for T = 60, 180, 600 s on the CPU.
3. Report nucleus and cell Dice and nucleus object F1 (IoU 0.5) on the
   experiment's OTHER fields, before (the base variant) and after.

Writes benchmarks/results/hitl.json and docs/images/hitl.png (with ``--out X.json``:
X.json and docs/images/X.png).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brightfield_aisegcell"
CACHE = ROOT / "benchmarks" / "results" / "cache"


def scores(bundle, truths, diameter="auto") -> dict:
    from napari_cultureseg.core.evaluate import evaluate

    r = evaluate(bundle, truths, device="cpu", diameter=diameter)["classes"]
    return {
        "nucleus_dice": r["nucleus"]["dice"],
        "cell_dice": r["cell"]["dice"],
        "nucleus_object_f1": r["nucleus"]["object_f1"],
    }


def corrected_samples(fields, base, held: str, painted_distances: str = "lone") -> list:
    """Fields "corrected" with their ground truth, as the Fine-tune widget sees painted
    corrections: the masks are known, a distance or border channel only on lone objects
    (``painted_distances="unknown"``: nowhere)."""
    from napari_cultureseg.core.bundle_config import distance_channels
    from napari_cultureseg.core.datasets import Sample
    from napari_cultureseg.core.model_input import to_model_input
    from napari_cultureseg.core.targets import targets_from_masks

    samples = []
    for t in fields:
        x = to_model_input(t.image, base.config.input)
        masks = {c.name: t.masks[c.name] > 0 for c in base.config.classes}
        target, valid = targets_from_masks(
            masks, base.config.classes, x.shape[1:], derived_known=False
        )
        if painted_distances == "unknown":
            for c in distance_channels(base.config.classes).values():
                valid[c] = False
        samples.append(Sample(t.name, x, target, valid, held))
    return samples


def fine_tuned(base, name: str, samples, seconds: float, threads: int, overrides=None):
    """Fine-tune ``base`` on ``samples`` as the Fine-tune widget does (its defaults, or
    ``overrides`` of them), for ``seconds``: the job's result (no new version when the
    parent stayed better)."""
    from napari_cultureseg.core.versions import fine_tune_job, finetune_config

    cfg = finetune_config(
        **{"steps": 100000, "val_every": 50, **(overrides or {})},
        threads=threads,
        max_seconds=seconds,
    )
    gen = fine_tune_job(base, name, samples, cfg)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def ranking(base, base_dir, fields, held: str, args) -> dict:
    """The "correct next" ranking against chance: the experiment's fields are split once (seeded)
    into a candidate pool and a fixed evaluation set; K fields of the pool are corrected
    either as ranked by the model's uncertainty (``Segmentation.uncertainty``, what
    ``cultureseg segment --rank`` and the Plate dock show) or drawn at random (several
    draws), then fine-tuned for T seconds and scored on the same evaluation fields."""
    import numpy as np

    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.scale import choose_zoom
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    k, seconds = int(args.ks.split(",")[0]), float(args.ts.split(",")[0])
    rng = np.random.default_rng(0)
    order = list(rng.permutation(len(fields)))
    n_pool = max(k + 1, len(fields) // 2)
    pool = [fields[i] for i in order[:n_pool]]
    evaluation = [fields[i] for i in order[n_pool:]]

    def uncertainty(image) -> float:  # as `cultureseg segment --rank` measures it
        zoom, _ = choose_zoom(base, image, diameter="auto", device="cpu")
        return run_to_end(segment(base, image, device="cpu", zoom=zoom)).uncertainty()

    unsure = {t.name: uncertainty(t.image) for t in pool}
    ranked = sorted(pool, key=lambda t: -unsure[t.name])[:k]
    before = scores(base, evaluation)
    print(f"{held}: pool {len(pool)}, evaluation {len(evaluation)}; uncertainty {unsure}")

    def run(chosen, how):
        result = fine_tuned(
            base, base_dir.name, corrected_samples(chosen, base, held), seconds, args.threads
        )
        after = scores(Bundle.load(result.path), evaluation) if result.path else before
        row = {"how": how, "fields": [t.name for t in chosen], "steps": result.steps}
        row.update(after=after, gain={m: after[m] - before[m] for m in after})
        print(row, flush=True)
        return row

    rows = [run(ranked, "ranked")]
    draws = np.random.default_rng(1)
    for _ in range(args.draws):
        rows.append(run([pool[i] for i in draws.choice(len(pool), k, replace=False)], "random"))
    random_gains = {
        m: [r["gain"][m] for r in rows if r["how"] == "random"] for m in rows[0]["gain"]
    }
    return {
        "experiment": held,
        "k": k,
        "seconds": seconds,
        "pool": [t.name for t in pool],
        "evaluated_on": [t.name for t in evaluation],
        "uncertainty": unsure,
        "before": before,
        "runs": rows,
        "ranked_gain": rows[0]["gain"],
        "random_gain_mean": {m: float(np.mean(v)) for m, v in random_gains.items()},
        "random_gain_sd": {
            m: float(np.std(v, ddof=1)) if len(v) > 1 else None for m, v in random_gains.items()
        },
        "threads": args.threads,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="210930MA20")
    ap.add_argument("--base-seconds", type=float, default=1800)
    ap.add_argument(
        "--base",
        default=None,
        help="a bundle trained without the experiment (e.g. benchmarks/loeo.py's "
        "cache) instead of training one here",
    )
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--ts", default="60,180,600")
    ap.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="torch CPU threads (default: all cores but one, as the Fine-tune widget)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hitl.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from --out")
    ap.add_argument(
        "--painted-distances",
        choices=("lone", "unknown"),
        default="lone",
        help="distance targets of corrected masks: known on lone (convex) objects, as the "
        "Fine-tune widget does, or unknown everywhere (releases before 2026-12)",
    )
    ap.add_argument(
        "--rank",
        action="store_true",
        help="compare fields chosen by the model's uncertainty with random ones (the first "
        "of --ks and --ts; writes benchmarks/results/hitl_ranking_<experiment>.json)",
    )
    ap.add_argument("--draws", type=int, default=5, help="random draws with --rank")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a fine-tuning setting of finetune_config (e.g. precision=auto, lr=1e-3)",
    )
    args = ap.parse_args(argv)
    overrides = {}
    for kv in args.set:
        key, _, value = kv.partition("=")
        overrides[key] = yaml.safe_load(value)
    ks = [int(k) for k in args.ks.split(",")]
    ts = [float(t) for t in args.ts.split(",")]
    figure = ROOT / "docs" / "images" / f"{Path(args.out).stem}.png"  # hitl.json -> hitl.png
    if args.plot_only:
        plot(json.loads(Path(args.out).read_text()), figure)
        return 0
    os.environ.setdefault("CULTURESEG_HOME", tempfile.mkdtemp(prefix="hitl-home-"))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.training import prepare_from_config, run_training

    config_path = ROOT / "configs" / "brightfield-nucleus-cell.yaml"
    held = args.experiment
    base_dir = Path(args.base) if args.base else CACHE / f"brightfield-without-{held}"
    t0 = time.perf_counter()
    if not (base_dir / "config.json").is_file():
        r = prepare_from_config(config_path, exclude_groups={held})
        train, val = r.train + r.test, r.val
        config = replace(r.training, max_seconds=args.base_seconds, threads=args.threads)
        print(f"training the base variant without {held}: {len(train)} train, {len(val)} val")
        bundle = run_training(
            replace(r.model, name=base_dir.name),
            config,
            train,
            val,
            on_report=lambda rep: rep.val_dice and print(f"  step {rep.step} {rep.val_dice}"),
        )
        bundle.with_config(storage_dtype="float16").save(base_dir, overwrite=True)
    base = Bundle.load(base_dir)
    if held in " ".join(base.config.lineage.get("data", {}).get("train", {}).get("names", [])):
        raise SystemExit(f"{base_dir} was trained on {held}; give a base trained without it")
    base_seconds = base.config.lineage.get("seconds")

    fields = [
        t for t in truth_from_folder(DATA / "nucleus_cell", ["nucleus", "cell"]) if held in t.name
    ]
    if args.rank:
        out = ranking(base, base_dir, fields, held, args)
        out["wall_seconds"] = time.perf_counter() - t0
        path = ROOT / "benchmarks" / "results" / f"hitl_ranking_{held}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {path}")
        return 0
    rng = np.random.default_rng(0)
    order = list(rng.permutation(len(fields)))
    corrected_pool = [fields[i] for i in order[: max(ks)]]
    evaluation = [fields[i] for i in order[max(ks) :]]
    print(
        f"{held}: {len(fields)} fields; correcting up to {max(ks)}, evaluating on {len(evaluation)}"
    )
    before = scores(base, evaluation)
    print("before", before)

    runs = []
    for k in ks:
        samples = corrected_samples(corrected_pool[:k], base, held, args.painted_distances)
        for seconds in ts:
            result = fine_tuned(base, base_dir.name, samples, seconds, args.threads, overrides)
            # no new version when fine-tuning did not beat the parent: the parent is what remains
            after = scores(Bundle.load(result.path), evaluation) if result.path else before
            row = {
                "k": k,
                "seconds": seconds,
                "steps": result.steps,
                "after": after,
                "gain": {m: after[m] - before[m] for m in after},
            }
            runs.append(row)
            print(row)
    out = {
        "experiment": held,
        "fields": len(fields),
        "evaluated_on": [t.name for t in evaluation],
        "corrected": [t.name for t in corrected_pool],
        "base_training_seconds": base_seconds,
        "before": before,
        "runs": runs,
        "threads": args.threads,
        "painted_distances": args.painted_distances,
        "finetune_overrides": overrides,
        "wall_seconds": time.perf_counter() - t0,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    plot(out, figure)
    return 0


def plot(out: dict, path: Path) -> None:
    """Dice / F1 on the unseen experiment against fine-tuning seconds, one line per K."""
    try:
        import matplotlib
    except ImportError:  # not a dependency: the figures are redrawn where it is installed
        print(f"matplotlib is not installed: {path} not drawn (results are in the JSON)")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("nucleus_dice", "nucleus Dice"),
        ("cell_dice", "cell Dice"),
        ("nucleus_object_f1", "nucleus object F1 (IoU 0.5)"),
    ]
    ks = sorted({r["k"] for r in out["runs"]})
    fig, axes = plt.subplots(1, len(metrics), figsize=(10, 3.2), sharey=True)
    for ax, (m, title) in zip(axes, metrics, strict=True):
        for k in ks:
            rows = sorted((r for r in out["runs"] if r["k"] == k), key=lambda r: r["seconds"])
            xs = [0] + [r["seconds"] for r in rows]
            ys = [out["before"][m]] + [r["after"][m] for r in rows]
            ax.plot(xs, ys, marker="o", label=f"K = {k} corrected field{'s' if k > 1 else ''}")
        ax.axhline(out["before"][m], color="0.6", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fine-tuning on CPU (s)")
        ax.set_xscale("symlog", linthresh=60)
        ax.set_xticks([0] + sorted({r["seconds"] for r in out["runs"]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"on {len(out['evaluated_on'])} unseen fields")
    axes[0].set_ylim(0, 1)
    axes[-1].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"Fine-tuning brightfield-nucleus-cell on experiment {out['experiment']}, "
        f"never seen in training ({out.get('threads', 1)} CPU thread)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
