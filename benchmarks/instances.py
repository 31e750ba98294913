"""Which representation separates touching objects best? Measured on validation images.

    python benchmarks/instances.py --config configs/phase-cells.yaml \
        --separate distance [--seconds 1200] [--threads 1]

Trains the recipe's model with its counted class separated by ``--separate``
(``distance``: a normalised distance channel, ``boundary``: a border channel;
``watershed`` and ``components`` need no extra channel and are scored on every
model's own mask), under a common time budget, then scores every way of
separating objects this model supports on the recipe's **validation** images
(the test images are not touched: the choice made here must not see them):
SA(0.5), mSA and object F1 for

* ``distance`` at seed thresholds 0.3-0.7,
* ``boundary`` (the border channel at 0.5),
* ``watershed`` of the mask's distance transform at h-maxima depths 1-10 px,
* ``components`` (connected components).

Results are merged into ``benchmarks/results/instances.json``; bundles are
cached in ``benchmarks/results/cache/instances/``.
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
CACHE = ROOT / "benchmarks" / "results" / "cache" / "instances"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--separate", default=None, choices=["distance", "boundary", "watershed"])
    ap.add_argument(
        "--bundle",
        default=None,
        help="score this trained model (e.g. a bundled one) instead of training a variant",
    )
    ap.add_argument("--seconds", type=float, default=1200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "instances.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("CULTURESEG_HOME", tempfile.mkdtemp(prefix="instances-home-"))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from napari_cultureseg.core import object_metrics as OM
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.targets import as_labels
    from napari_cultureseg.core.tiling import run_to_end
    from napari_cultureseg.core.training import prepare_from_config, run_training

    recipe = prepare_from_config(args.config)
    k = next(i for i, c in enumerate(recipe.model.classes) if c.instances)
    spec = recipe.model.classes[k]
    if args.bundle:
        path = Path(args.bundle)
        name = f"{recipe.model.name}-bundled"
    else:
        if args.separate is None:
            ap.error("give --separate (to train a variant) or --bundle (to score a model)")
        name = f"{recipe.model.name}-{args.separate}-{int(args.seconds)}s"
        path = CACHE / name
    if not (path / "config.json").is_file():
        classes = list(recipe.model.classes)
        classes[k] = replace(spec, separate=args.separate)
        model = replace(recipe.model, name=name, classes=tuple(classes))
        if args.separate != spec.separate:  # the samples' extra channels follow the classes
            from napari_cultureseg.core.training import recipes

            y = dict(recipe.yaml)
            y["classes"] = [dict(c) for c in y["classes"]]
            y["classes"][k]["separate"] = args.separate
            with tempfile.NamedTemporaryFile(
                "w", suffix=".yaml", dir=Path(args.config).parent, delete=False
            ) as f:
                import yaml

                yaml.safe_dump(y, f)
            try:
                recipe = recipes.prepare_from_config(f.name)
            finally:
                os.unlink(f.name)
            model = replace(recipe.model, name=name)
        config = replace(recipe.training, max_seconds=args.seconds, threads=args.threads)
        t0 = time.perf_counter()
        bundle = run_training(
            model,
            config,
            recipe.train,
            recipe.val,
            on_report=lambda r: (
                r.val_dice
                and print(
                    f"  step {r.step} {time.perf_counter() - t0:.0f}s "
                    f"{r.val_dice} {r.val_objects or ''}",
                    flush=True,
                )
            ),
        )
        bundle.with_config(storage_dtype="float16").save(path, overwrite=True)
    bundle = Bundle.load(path)
    spec = bundle.config.classes[k]

    # validation images at the model's scale, with their true objects
    preds: dict[str, list] = {}
    trues, dices = [], []
    for s in recipe.val:
        truth = s.labels[k] if s.labels and k in s.labels else as_labels(s.target[k] > 0)
        trues.append(truth)
        seg = run_to_end(segment(bundle, _plane(s), device="cpu"))
        mask = seg.mask(spec.name)
        i = np.count_nonzero(mask & (truth > 0))
        dices.append(2 * i / (mask.sum() + (truth > 0).sum()))
        ways = {"components": dict(separate="components")}
        ways.update(
            {
                f"watershed h={h}": dict(separate="watershed", split_depth=float(h))
                for h in (1, 2, 3, 5, 7, 10)
            }
        )
        if spec.separate == "distance":
            ways.update(
                {
                    f"distance t={t}": dict(separate="distance", seed_threshold=t)
                    for t in (0.3, 0.4, 0.5, 0.6, 0.7)
                }
            )
        if spec.separate == "boundary":
            ways["boundary"] = dict(separate="boundary")
        for way, kw in ways.items():
            seg2 = replace(
                seg,
                classes=tuple(replace(c, **kw) if c.name == spec.name else c for c in seg.classes),
            )
            preds.setdefault(way, []).append(seg2.instances(spec.name, mask))
    rows = {}
    for way, p in preds.items():
        matches = [OM.match_instances(a, b, 0.5) for a, b in zip(p, trues, strict=True)]
        tp, fp, fn = (sum(getattr(m, f) for m in matches) for f in ("tp", "fp", "fn"))
        rows[way] = {
            "sa_0.5": OM.segmentation_accuracy(p, trues, 0.5),
            "msa": OM.mean_segmentation_accuracy(p, trues),
            "object_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        }
        print(
            f"{way:>16}: SA {rows[way]['sa_0.5']:.3f} mSA {rows[way]['msa']:.3f} "
            f"F1 {rows[way]['object_f1']:.3f}",
            flush=True,
        )
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[name] = {
        "model": recipe.model.name,
        "trained_with": spec.separate,
        "seconds": args.seconds,
        "threads": args.threads,
        "steps": bundle.config.lineage.get("steps"),
        "val_images": [s.name for s in recipe.val],
        "val_dice_mean": float(np.mean(dices)),
        "ways": rows,
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _plane(sample):
    """A validation sample's image as a plane the model normalises again (already at its scale)."""
    import numpy as np

    x = sample.image
    return np.asarray(x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1), np.float32)


if __name__ == "__main__":
    sys.exit(main())
