"""Leave one experiment out: how a recipe does on an experiment it never saw.

    python benchmarks/loeo.py [--config configs/brightfield-nucleus-cell.yaml]
        [--experiments 181024TK20,200313SK20,200925SK30,210930MA20]
        [--seconds 2400] [--threads 1] [--variant NAME] [--set KEY=VALUE ...]

For each experiment E, a model is trained from the recipe with every image of
E left out (its nucleus_cell and nucleus_only images alike; validation, which
picks the kept weights, is drawn from the other experiments), then E's
nucleus_cell fields are segmented with the object size estimated per image
(the product's default, ``diameter: auto``) and scored; also at the fields' own
scale (no resampling) and, as an oracle that is never a default, at the
size their own nucleus masks give. No choice of any kind sees E.

``--set`` changes the recipe for a variant (dotted YAML keys, YAML values), e.g.
``--set training.augment.appearance=false`` or ``--set scale=null``; the
augmentation ablation in ``docs/benchmarks.md`` is a set of such variants.

``--choose-seeds 0.3,0.4,0.5,0.6,0.7`` first chooses each distance-separated
class's seed threshold on the model's own validation images (as the recipe option
``training.choose_seeds`` does at the end of a run); ``--bundle-of V`` scores the
cached bundles of variant V under the name ``--variant``.

Bundles are cached in ``benchmarks/results/cache/loeo/<variant>-without-<E>``;
results go to ``benchmarks/results/loeo.json`` (one entry per variant and E,
merged with what is there).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brightfield_aisegcell" / "nucleus_cell"
CACHE = ROOT / "benchmarks" / "results" / "cache" / "loeo"
EXPERIMENTS = ("181024TK20", "200313SK20", "200925SK30", "210930MA20")
METRICS = ("dice", "object_f1", "sa_0.5", "msa", "object_precision", "object_recall")


def patched_recipe(config: Path, sets: list[str]) -> Path:
    """The recipe with ``--set`` changes applied, written beside the original (for data_root)."""
    import yaml

    y = yaml.safe_load(config.read_text())
    for item in sets:
        key, _, value = item.partition("=")
        node = y
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # e.g. augment: true -> a mapping
                raise SystemExit(f"--set {item}: {part} is not a mapping in the recipe")
        node[parts[-1]] = yaml.safe_load(value)
    if not sets:
        return config
    fd, name = tempfile.mkstemp(suffix=".yaml", prefix=".loeo-", dir=config.parent)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(y, f)
    return Path(name)


def train_without(config: Path, held: str, out: Path, seconds: float, threads: int) -> Path:
    from napari_cultureseg.core.training import prepare_from_config, run_training, split3

    if (out / "config.json").is_file():
        return out
    r = prepare_from_config(config, exclude_groups={held})
    # every remaining image trains or validates: E is the test set
    pool = r.train + r.val + r.test
    split_y = r.yaml.get("split", {})
    # validation: from the fields annotated for every class, drawn from every experiment left
    full = [s for s in pool if all(s.valid[c].any() for c in range(len(r.model.classes)))]
    _, val, _ = split3(
        full,
        0.0,
        float(split_y.get("val_fraction", 0.2)),
        int(split_y.get("seed", 0)),
        "stratified",
    )
    val_names = {s.name for s in val}
    train = [s for s in pool if s.name not in val_names]
    config_t = replace(r.training, max_seconds=seconds, threads=threads)
    print(f"training without {held}: {len(train)} train, {len(val)} val", flush=True)
    t0 = time.perf_counter()
    bundle = run_training(
        replace(r.model, name=out.name),
        config_t,
        train,
        val,
        on_report=lambda rep: (
            rep.val_dice
            and print(
                f"  step {rep.step} {time.perf_counter() - t0:.0f}s {rep.val_dice} "
                f"{rep.val_objects or ''}",
                flush=True,
            )
        ),
    )
    bundle.with_config(storage_dtype="float16").save(out, overwrite=True)
    return out


def seeds_chosen(bundle, config: Path, held: str, candidates: tuple[float, ...]):
    """``bundle`` with its distance seed thresholds chosen on its own validation images (those
    its lineage names, all from the experiments it trained on), as ``training.choose_seeds``
    does at the end of a run: for bundles trained before that option (the cache)."""
    from napari_cultureseg.core.training import prepare_from_config
    from napari_cultureseg.core.training.validation import with_seeds_chosen

    names = set(bundle.config.lineage["data"]["val"]["names"])
    r = prepare_from_config(config, exclude_groups={held})
    val = [s for s in r.train + r.val + r.test if s.name in names]
    bundle, chosen = with_seeds_chosen(bundle, val, candidates)
    print(f"seeds chosen on {len(val)} validation images: {chosen}", flush=True)
    return bundle, chosen


def score(bundle, truths, diameter) -> dict:
    from napari_cultureseg.core.evaluate import evaluate

    t0 = time.perf_counter()
    r = evaluate(bundle, truths, device="cpu", diameter=diameter)
    out = {
        f"{c}_{m}": r["classes"][c].get(m)
        for c in ("nucleus", "cell")
        for m in METRICS
        if c in r["classes"] and r["classes"][c].get(m) is not None
    }
    out["zooms"] = r["zooms"]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "brightfield-nucleus-cell.yaml"))
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS))
    ap.add_argument("--seconds", type=float, default=2400, help="training budget per model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", default="recipe", help="name of this recipe variant")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        help="KEY=VALUE change to the recipe (dotted keys), may repeat",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loeo.json"))
    ap.add_argument(
        "--bundle-of",
        default=None,
        metavar="VARIANT",
        help="score the cached bundles of this variant (e.g. with --choose-seeds) as --variant",
    )
    ap.add_argument(
        "--choose-seeds",
        default="",
        metavar="T1,T2,...",
        help="choose each distance-separated class's seed threshold among these on the "
        "model's validation images before scoring (training.choose_seeds, for cached bundles)",
    )
    ap.add_argument(
        "--diameters",
        default="auto,none,truth",
        help="how the test fields are scaled: auto, none, truth",
    )
    ap.add_argument(
        "--table",
        default=None,
        metavar="VARIANT",
        help="print the markdown table of a variant's results and exit",
    )
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.out).read_text())["runs"], args.table))
        return 0
    os.environ.setdefault("CULTURESEG_HOME", tempfile.mkdtemp(prefix="loeo-home-"))
    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.evaluate import truth_from_folder

    config = patched_recipe(Path(args.config), args.sets)
    try:
        for held in args.experiments.split(","):
            out = CACHE / f"{args.bundle_of or args.variant}-without-{held}"
            t0 = time.perf_counter()
            train_without(config, held, out, args.seconds, args.threads)
            bundle = Bundle.load(out)
            seeds = None
            if args.choose_seeds:
                candidates = tuple(float(t) for t in args.choose_seeds.split(","))
                bundle, seeds = seeds_chosen(bundle, config, held, candidates)
                if args.bundle_of:  # kept beside the others (e.g. for benchmarks/hitl.py --base)
                    bundle.save(CACHE / f"{args.variant}-without-{held}", overwrite=True)
            truths = [t for t in truth_from_folder(DATA, ["nucleus", "cell"]) if held in t.name]
            row = {
                "variant": args.variant,
                "experiment": held,
                "sets": args.sets,
                "fields": len(truths),
                "training": {
                    k: bundle.config.lineage.get(k)
                    for k in ("steps", "seconds", "best_step", "stopped")
                },
                "val": bundle.config.lineage.get("metrics", {}).get("val_dice"),
                "threads": args.threads,
            }
            if seeds is not None:
                row["seeds"] = seeds
            if args.bundle_of:
                row["bundle_of"] = args.bundle_of
            for d in args.diameters.split(","):
                row[d] = score(bundle, truths, None if d == "none" else d)
                print(
                    held,
                    d,
                    {k: round(v, 3) for k, v in row[d].items() if isinstance(v, float)},
                    flush=True,
                )
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            merge(Path(args.out), row)
    finally:
        if config != Path(args.config):
            config.unlink(missing_ok=True)
    return 0


def table(rows: list[dict], variant: str, diameter: str = "auto") -> str:
    """The leave-one-experiment-out table of one variant, in markdown."""
    cols = [
        ("nucleus_dice", "nucleus Dice"),
        ("nucleus_object_f1", "nucleus F1@0.5"),
        ("nucleus_sa_0.5", "nucleus SA(0.5)"),
        ("cell_dice", "cell Dice"),
        ("cell_object_f1", "cell F1@0.5"),
    ]
    out = [
        "| held-out experiment | fields | "
        + " | ".join(c for _, c in cols)
        + " | zoom (auto) | training |",
        "|---|---|" + "---|" * len(cols) + "---|---|",
    ]
    runs = [r for r in rows if r["variant"] == variant and diameter in r]
    for r in sorted(runs, key=lambda r: r["experiment"]):
        m = r[diameter]
        zooms = list(m.get("zooms", {}).values())
        z = f"{min(zooms):.2f}-{max(zooms):.2f}" if zooms else "–"
        t = r["training"]
        out.append(
            f"| {r['experiment']} | {r['fields']} | "
            + " | ".join(f"{m[k]:.3f}" if k in m else "–" for k, _ in cols)
            + f" | {z} | {t['steps']} steps, {t['seconds'] / 60:.0f} min |"
        )
    if runs:
        out.append(
            "| **mean** | | "
            + " | ".join(
                f"**{sum(r[diameter][k] for r in runs) / len(runs):.3f}**"
                if all(k in r[diameter] for r in runs)
                else "–"
                for k, _ in cols
            )
            + " | | |"
        )
    return "\n".join(out)


def merge(path: Path, row: dict) -> None:
    """Add ``row`` to the results file (replacing the same variant and experiment), locked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(path.read_text())["runs"] if path.is_file() else []
        rows = [
            r
            for r in rows
            if (r["variant"], r["experiment"]) != (row["variant"], row["experiment"])
        ]
        rows.append(row)
        rows.sort(key=lambda r: (r["variant"], r["experiment"]))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runs": rows}, indent=1) + "\n")
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
