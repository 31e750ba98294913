"""Human-in-the-loop, simulated honestly: how much do a few corrected fields help?

    python benchmarks/hitl.py [--experiment 210930MA20] [--base-seconds 1500]

1. Train `brightfield-nucleus-cell` from scratch WITHOUT one aiSEGcell experiment
   (all its nucleus_cell and nucleus_only images kept out), with the bundled
   model's config and a time budget (cached in benchmarks/results/cache/).
2. Act as a user on that unseen experiment: for K = 1, 2, 4 fields, "correct"
   them with the ground truth (only those fields' masks are shown to the model,
   every pixel of them reviewed), fine-tune through the same job as the
   Fine-tune widget for T = 60, 180, 600 s on the CPU.
3. Report nucleus and cell Dice and nucleus object F1 (IoU 0.5) on the
   experiment's OTHER fields, before (the base variant) and after.

Writes benchmarks/results/hitl.json and docs/images/hitl.png.
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brightfield_aisegcell"
CACHE = ROOT / "benchmarks" / "results" / "cache"


def scores(bundle, truths) -> dict:
    from napari_cultureseg.core.evaluate import evaluate

    r = evaluate(bundle, truths, device="cpu")["classes"]
    return {"nucleus_dice": r["nucleus"]["dice"], "cell_dice": r["cell"]["dice"],
            "nucleus_object_f1": r["nucleus"]["object_f1"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="210930MA20")
    ap.add_argument("--base-seconds", type=float, default=1500)
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--ts", default="60,180,600")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hitl.json"))
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    ts = [float(t) for t in args.ts.split(",")]
    os.environ.setdefault("CULTURESEG_HOME", tempfile.mkdtemp(prefix="hitl-home-"))

    import numpy as np

    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.images import to_model_input
    from napari_cultureseg.core.training import prepare_from_config, run_training
    from napari_cultureseg.core.versions import fine_tune_job

    config_path = ROOT / "configs" / "brightfield-nucleus-cell.yaml"
    held = args.experiment
    base_dir = CACHE / f"brightfield-without-{held}"
    t0 = time.perf_counter()
    if not (base_dir / "config.json").is_file():
        config, train, val, y = prepare_from_config(config_path, exclude_groups={held})
        config = replace(config, name=base_dir.name, max_seconds=args.base_seconds)
        print(f"training the base variant without {held}: {len(train)} train, {len(val)} val images")
        bundle = run_training(config, train, val,
                              on_report=lambda r: r.val_dice and print(f"  step {r.step} {r.val_dice}"))
        bundle.with_config(storage_dtype="float16").save(base_dir, overwrite=True)
    base = Bundle.load(base_dir)
    base_seconds = base.config.lineage.get("seconds")

    fields = [t for t in truth_from_folder(DATA / "nucleus_cell", ["nucleus", "cell"]) if held in t.name]
    rng = np.random.default_rng(0)
    order = list(rng.permutation(len(fields)))
    corrected_pool, evaluation = [fields[i] for i in order[: max(ks)]], [fields[i] for i in order[max(ks):]]
    print(f"{held}: {len(fields)} fields; correcting up to {max(ks)}, evaluating on {len(evaluation)}")
    before = scores(base, evaluation)
    print("before", before)

    from napari_cultureseg.core.datasets import Sample
    from napari_cultureseg.core.training import TrainConfig

    runs = []
    for k in ks:
        samples = []
        for t in corrected_pool[:k]:
            x = to_model_input(t.image, base.config.input)
            target = np.stack([(t.masks[c.name] > 0).astype(np.uint8) for c in base.config.classes])
            samples.append(Sample(t.name, x, target, np.ones(target.shape, bool), held))
        for seconds in ts:
            cfg = TrainConfig(steps=100000, lr=3e-4, batch_size=4, patch_size=256, schedule="cosine",
                              warmup=0.0, val_every=50, early_stop_patience=None,
                              threads=os.cpu_count(), max_seconds=seconds)
            gen = fine_tune_job(base, base_dir.name, samples, cfg)
            while True:
                try:
                    next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
            after = scores(Bundle.load(result.path), evaluation)
            row = {"k": k, "seconds": seconds, "steps": result.steps, "after": after,
                   "gain": {m: after[m] - before[m] for m in after}}
            runs.append(row)
            print(row)
    out = {
        "experiment": held, "fields": len(fields), "evaluated_on": [t.name for t in evaluation],
        "corrected": [t.name for t in corrected_pool], "base_training_seconds": base_seconds,
        "before": before, "runs": runs, "wall_seconds": time.perf_counter() - t0,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    plot(out, ROOT / "docs" / "images" / "hitl.png")
    return 0


def plot(out: dict, path: Path) -> None:
    """A small figure: Dice / F1 against fine-tuning seconds, one line per K."""
    import numpy as np
    from skimage.draw import line as draw_line

    w, h, pad = 720, 260, 30
    img = np.full((h, w, 3), 255, np.uint8)
    metrics = ["nucleus_dice", "cell_dice", "nucleus_object_f1"]
    colours = {1: (230, 80, 60), 2: (40, 120, 220), 4: (40, 170, 80)}
    panel = (w - 2 * pad) // len(metrics)
    ts = sorted({r["seconds"] for r in out["runs"]})
    for j, m in enumerate(metrics):
        x0 = pad + j * panel
        img[pad:h - pad, x0] = 0
        img[h - pad, x0:x0 + panel - 20] = 0

        def xy(i, v):
            return int(h - pad - v * (h - 2 * pad)), int(x0 + 10 + i * (panel - 40) / max(1, len(ts)))

        for k, c in colours.items():
            pts = [xy(0, out["before"][m])] + [xy(i + 1, r["after"][m]) for i, t in enumerate(ts)
                                               for r in out["runs"] if r["k"] == k and r["seconds"] == t]
            for a, b in zip(pts, pts[1:]):
                rr, cc = draw_line(*a, *b)
                img[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)] = c
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, img)


if __name__ == "__main__":
    sys.exit(main())
