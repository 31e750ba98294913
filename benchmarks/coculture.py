"""Table I of DeepMuCS (Khalid et al.) for our co-cultures: Mask R-CNN against the U-Net route.

    python benchmarks/coculture.py [--n-train 200] [--n-test 40] [--seconds 3300] \
        [--threads 1] [--backbone resnet18] [--routes maskrcnn,unet] [--bundle] \
        [--out benchmarks/results/coculture.json]

Generated bright-field co-cultures of the four aiSEGcell cell types (MkP, macrophage,
pre-osteoclast, GMP; see ``coculture_generate.py``) are written once to ``--work``
(train and test made from different positions), then two routes learn the same
training images under the same time budget and are scored on the same test images:

(a) ``maskrcnn``: :mod:`napari_cultureseg.core.maskrcnn` (torchvision Mask R-CNN + FPN,
    the paper's anchors, from scratch; batches of 2 random 512² windows, flips and 90°
    turns), detections above score 0.05 (the usual COCO-evaluation floor), each pixel to
    the best one;
(b) ``unet``: ``configs/coculture-celltype.yaml``, one class per cell type
    (``instances: true``, ``separate: distance``, as ``configs/phase-cells.yaml`` for its
    cells), trained by ``train_from_config`` (batches of 4 random 256²: the same pixels a
    step; flips and 90° turns only), objects from ``Segmentation.instances``. Its classes are
    independent: a pixel may be in two types' objects. An object's score is the mean
    probability of its class inside it (COCO ranks by score).

Scored as Khalid et al. do, the COCO protocol (pycocotools, segmentation) with LIVECell's
area ranges (small < 18², medium 18²-31², large > 31² px² of mask; up to 2000 detections
an image): mAP, mAP50, mAP75, mAPs/m/l over all types and per type; a cell found with
the wrong type counts as missed. Also seconds per test image (CPU, ``--threads``) and
the training-set size. Results merge into ``--out`` under ``n_train=<n>``, next to the
paper's figures, so runs with several ``--n-train`` make the table, and the two routes
may run as two processes side by side (``--routes maskrcnn`` and ``--routes unet``).
``--bundle`` keeps the U-Net route's model as the bundled ``coculture-celltype``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "results" / "cache" / "coculture"
CONFIG = ROOT / "configs" / "coculture-celltype.yaml"
PAPER = {  # Khalid et al., Table I, segmentation columns (LIVECell co-cultures, 8 types)
    f"DeepMuCS{n}": dict(zip(("mAP", "mAP50", "mAP75", "mAPs", "mAPm", "mAPl"), v, strict=True))
    for n, v in (
        (800, (69.31, 87.53, 83.92, 59.37, 75.00, 81.44)),
        (1600, (76.14, 93.45, 90.94, 70.63, 79.97, 84.12)),
        (4000, (77.04, 94.09, 91.63, 71.63, 80.93, 84.67)),
    )
}


def dataset(work: Path, n_train: int, n_test: int, seed: int) -> Path:
    """The generated co-cultures, written once per (sizes, seed) and reused."""
    from coculture_generate import DATA, SOURCES

    from napari_cultureseg.core.synth import coculture as sc
    from napari_cultureseg.core.synth import coculture_sources as cs

    folder = work / f"data-{n_train}-{n_test}-{seed}"
    if (folder / "manifest.json").is_file():
        return folder
    if not DATA.is_dir():
        raise SystemExit(f"needs the public data folder {DATA}")
    t0 = time.perf_counter()
    sources = [
        cs.source_from_folder(DATA, name=t, prefix=e, pixel_size=p) for t, e, p, _ in SOURCES
    ]
    sc.write_dataset(sources, folder, n_train=n_train, n_test=n_test, seed=seed)
    print(f"wrote {n_train} + {n_test} co-cultures in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def recipe(seconds: float, seed: int) -> Path:
    """``configs/coculture-celltype.yaml`` with this run's budget and seed, not bundled."""
    from loeo import patched_recipe

    return patched_recipe(
        CONFIG, [f"training.max_seconds={seconds}", f"training.seed={seed}", "bundle=false"]
    )


def train_maskrcnn(train, args, work: Path):
    from napari_cultureseg.core import maskrcnn as mr
    from napari_cultureseg.core import maskrcnn_training as mt

    gen = mt.train_maskrcnn(
        train,
        model=args.backbone,
        steps=1_000_000,
        max_seconds=args.seconds,
        batch_size=2,
        patch_size=512,
        seed=args.seed,
        threads=args.threads,
    )
    try:
        while True:
            s = next(gen)
            if s.step == 1 or s.step % 20 == 0:
                print(f"  maskrcnn step {s.step} {s.seconds:.0f}s loss {s.loss:.3f}", flush=True)
    except StopIteration as stop:
        model = stop.value
    mr.save_maskrcnn(model, work / f"maskrcnn-{args.backbone}")
    return model


def route_maskrcnn(train, test, args, work):
    from napari_cultureseg.core import maskrcnn as mr
    from napari_cultureseg.core import maskrcnn_coco as mc

    t0 = time.perf_counter()
    model = train_maskrcnn(train, args, work)
    trained, results, times = time.perf_counter() - t0, [], []
    for i, s in enumerate(test, 1):
        t0 = time.perf_counter()
        labels, scores = mr.predict_instances(
            model, s.image, score_threshold=0.05, with_scores=True
        )
        times.append(time.perf_counter() - t0)
        results += mc.coco_annotations(labels, s.types, image_id=i, scores=scores)
    return results, times, {"train_seconds": round(trained, 1), **model.info}


def ship(saved: Path, args) -> Path:
    """The U-Net route's bundle, copied into the package as ``coculture-celltype``."""
    from napari_cultureseg.core.bundles import Bundle, bundled_dir

    bundle = Bundle.load(saved)
    command = (
        f"python benchmarks/coculture.py --routes unet --n-train {args.n_train} "
        f"--n-test {args.n_test} --seconds {args.seconds:g} --seed {args.seed} --bundle"
    )
    card = {**bundle.config.card, "config_file": CONFIG.name, "command": command}
    return bundle.with_config(card=card).save(bundled_dir() / "coculture-celltype", overwrite=True)


def route_unet(data: Path, test, args, work):
    import numpy as np
    import yaml
    from scipy import ndimage as ndi
    from skimage.segmentation import relabel_sequential

    from napari_cultureseg.core import maskrcnn_coco as mc
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end
    from napari_cultureseg.core.training import train_from_config

    types = test[0].types
    declared = [c["name"] for c in yaml.safe_load(CONFIG.read_text())["classes"]]
    if declared != list(types):
        raise SystemExit(f"{CONFIG.name} declares {declared}; the co-cultures hold {types}")
    path = recipe(args.seconds, args.seed)

    def report(r):
        if r.step == 1 or r.step % 100 == 0:
            print(f"  unet step {r.step} {r.seconds:.0f}s loss {r.loss:.3f}", flush=True)

    t0 = time.perf_counter()
    try:
        saved = train_from_config(
            path, out_dir=work / "unet", data_root=data, on_report=report, threads=args.threads
        )
    finally:
        path.unlink()
    trained = time.perf_counter() - t0
    if args.bundle:
        saved = ship(saved, args)
    bundle = Bundle.load(saved)
    results, times = [], []
    for i, s in enumerate(test, 1):
        t0 = time.perf_counter()
        seg = run_to_end(segment(bundle, s.image, device="cpu"))
        labels, scores = {}, {}
        for k, t in enumerate(types):
            lab = relabel_sequential(seg.instances(t))[0]
            n = int(lab.max())
            labels[t] = lab
            scores[t] = np.asarray(ndi.mean(seg.probability(k), lab, np.arange(1, n + 1)))
        times.append(time.perf_counter() - t0)
        results += mc.coco_annotations(labels, types, image_id=i, scores=scores)
    lineage = bundle.config.lineage
    return results, times, {"train_seconds": round(trained, 1), "steps": lineage.get("steps")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=200, help="generated training co-cultures")
    ap.add_argument("--n-test", type=int, default=40, help="generated test co-cultures")
    ap.add_argument("--seconds", type=float, default=3300, help="training budget per route")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--routes", default="maskrcnn,unet", help="comma-separated: maskrcnn,unet")
    ap.add_argument(
        "--bundle",
        action="store_true",
        help="keep the U-Net route's model as the bundled coculture-celltype",
    )
    ap.add_argument("--work", type=Path, default=WORK, help="data and trained models")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "coculture.json")
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from _results import merge_result

    from napari_cultureseg.core import maskrcnn_coco as mc
    from napari_cultureseg.core import maskrcnn_training as mt

    args.work.mkdir(parents=True, exist_ok=True)
    data = dataset(args.work, args.n_train, args.n_test, args.seed)
    train, test = mt.read_folder(data / "train"), mt.read_folder(data / "test")
    types = train[0].types
    truth, shapes = [], {}
    for i, s in enumerate(test, 1):
        truth += mc.coco_annotations(dict(zip(types, s.labels, strict=True)), types, image_id=i)
        shapes[i] = s.image.shape[:2]

    def count(samples):
        return {
            t: int(sum(len(np.unique(s.labels[k])) - 1 for s in samples))
            for k, t in enumerate(types)
        }

    entry = {
        "data": {
            "train_images": len(train),
            "train_instances": count(train),
            "test_images": len(test),
            "test_instances": count(test),
            "image_shape": list(test[0].image.shape),
            "pixel_size_um": json.loads((data / "manifest.json").read_text())["train"][
                "pixel_size"
            ],
        },
        "protocol": {
            "iou": "segmentation",
            "area_ranges_px2": mc.LIVECELL_AREAS,
            "max_dets": mc.MAX_DETS[-1],
            "unet_score": "mean class probability inside",
            "maskrcnn_score_threshold": 0.05,
        },
        "settings": {
            "seconds": args.seconds,
            "threads": args.threads,
            "seed": args.seed,
            "backbone": args.backbone,
            "torch": torch.__version__,
        },
    }
    routes = {
        "maskrcnn": lambda: route_maskrcnn(train, test, args, args.work),
        "unet": lambda: route_unet(data, test, args, args.work),
    }
    for name in args.routes.split(","):
        print(f"{name}: training for {args.seconds:.0f} s on {len(train)} images", flush=True)
        results, times, info = routes[name]()
        scores = mc.coco_evaluate(truth, results, types=types, shapes=shapes)
        entry[name] = {
            **scores,
            "seconds_per_image": round(float(np.mean(times)), 2),
            "detections": len(results),
            "training": info,
        }
        print(f"{name}: {len(results)} detections, {np.mean(times):.1f} s per image")
        for who, row in [("all", scores["overall"]), *scores["per_type"].items()]:
            cells = " ".join(
                f"{k} {'-' if v is None else f'{100 * v:5.1f}'}" for k, v in row.items()
            )
            print(f"  {who:14s} {cells}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    merge_result(args.out, "paper (Khalid et al. Table I, segmentation, %)", PAPER)
    merge_result(args.out, f"n_train={args.n_train}", entry, deep=True)  # routes run apart
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
