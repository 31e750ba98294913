"""The ``cultureseg`` command: the same engine as the napari widgets, headless.

::

    cultureseg models                                  # installed models and their classes
    cultureseg segment IMG... [--model M] --out DIR    # one mask TIFF per class
    cultureseg train --config configs/M.yaml           # train a bundle (from scratch or a parent)
    cultureseg evaluate DATA_DIR --model M             # metrics on images with ground truth
    cultureseg demo [--screenshot PNG]                 # napari with the Segment widget
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .core.images import SUFFIXES


def _images_in(paths: list[str]) -> list[Path]:
    """Expand folders into the image files they hold (masks named ``*_<class>.tif`` included
    only when no ``*_image.*`` files mark which files are images)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES)
            marked = [f for f in files if f.stem.endswith("_image")]
            out.extend(marked or files)
        else:
            out.append(p)
    return out


def _write_tif(path: Path, data) -> None:
    """Write a zlib TIFF atomically (temp file + rename)."""
    import tifffile

    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(tmp, data, compression="zlib")
    os.replace(tmp, path)


def cmd_models(args) -> int:
    from .core.bundles import DEFAULT_MODEL, Bundle, list_bundles

    found = list_bundles()
    if not found:
        print("no models installed")
        return 1
    for name, path in found.items():
        cfg = Bundle.load(path).config
        classes = ", ".join(
            c.name + (" (+instances)" if c.instances else "") for c in cfg.classes
        ) + "".join(f", {d.name} (derived)" for d in cfg.derived)
        mark = " [default]" if name == DEFAULT_MODEL else ""
        trained = "" if cfg.lineage.get("steps") else "  UNTRAINED"
        print(f"{name}{mark}: {cfg.modality}; classes: {classes}{trained}\n    {path}")
    return 0


def cmd_segment(args) -> int:
    from tqdm import tqdm

    from .core.bundles import load_bundle
    from .core.images import read_image
    from .core.segment import segment

    bundle = load_bundle(args.model)
    images = _images_in(args.images)
    if not images:
        print("no images found in " + " ".join(args.images), file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    failed = 0
    for path in images:
        try:
            plane = read_image(path, plane=args.plane)
        except ValueError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        gen = segment(
            bundle, plane, device=args.device, tile=args.tile, overlap=args.overlap,
            batch_size=args.batch_size,
        )
        with tqdm(desc=path.name, unit="tile", leave=False, disable=args.quiet) as bar:
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                bar.total = p.total
                bar.update(p.done - bar.n)
        stem = path.stem.removesuffix("_image")
        masks = result.masks()
        for name, mask in masks.items():
            _write_tif(out / f"{stem}_{name}.tif", mask.astype("uint8"))
            spec = result.spec(name)
            if getattr(spec, "instances", False):
                _write_tif(out / f"{stem}_{name}_instances.tif", result.instances(name, mask))
        if args.prob:
            for k, c in enumerate(result.classes):
                _write_tif(out / f"{stem}_{c.name}_prob.tif", result.probabilities[k])
        summary = ", ".join(f"{n} {100 * m.mean():.1f}%" for n, m in masks.items())
        if not args.quiet:
            print(f"{path.name}: {summary}")
    return 1 if failed else 0


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .core.training import train_from_config

    with tqdm(desc="training", unit="step", disable=args.quiet) as bar:

        def report(r):
            bar.total = r.total_steps
            bar.update(r.step - bar.n)
            post = {"loss": f"{r.loss:.4f}"}
            if r.val_dice:
                post.update({k: f"{v:.3f}" for k, v in r.val_dice.items()})
            bar.set_postfix(post, refresh=False)

        path = train_from_config(args.config, out_dir=args.out, on_report=report, data_root=args.data,
                                  threads=args.threads)
    print(f"saved {path}")
    return 0


def cmd_evaluate(args) -> int:
    import json

    from .core.bundles import load_bundle
    from .core.evaluate import evaluate, format_table, truth_from_folder

    bundle = load_bundle(args.model)
    names = [c.name for c in bundle.config.classes] + [d.name for d in bundle.config.derived]
    only = None
    val_ids = bundle.config.card.get("validation_ids")
    if args.split == "val":
        if not val_ids:
            print("error: the model card lists no validation images; use --split all", file=sys.stderr)
            return 2
        only = set(val_ids)
    truths = truth_from_folder(args.data, names, only=only)
    result = evaluate(bundle, truths, device=args.device,
                      on_image=None if args.quiet else lambda n: print(f"  {n}", file=sys.stderr))
    result.update({"model": bundle.config.name, "data": str(args.data), "split": args.split})
    print(f"{bundle.config.name} on {len(truths)} images of {args.data} ({args.split})")
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.record:
        from .core.cards import record_evaluation

        result["command"] = f"cultureseg evaluate {Path(args.data).as_posix()} --model {bundle.config.name} --split {args.split}"
        record_evaluation(bundle.path, result)
        print(f"recorded in {bundle.path}/config.json and card.md")
    return 0


def cmd_demo(args) -> int:
    from ._demo import main as demo

    return demo(sample=args.sample, model=args.model, screenshot=args.screenshot)


def build_parser() -> argparse.ArgumentParser:
    from .core.bundles import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="cultureseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list installed models and their classes")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("segment", help="segment images or folders; one mask TIFF per class")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or bundle folder (default {DEFAULT_MODEL})")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--prob", action="store_true", help="also write <image>_<class>_prob.tif")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--tile", type=int, default=None, help="tile size (default: the model's)")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass (default: 1 on the CPU, 4 on a GPU)")
    p.add_argument("--plane", type=int, default=None, help="plane of a multi-plane file to segment")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("train", help="train a model from a YAML config (see configs/)")
    p.add_argument("--config", required=True, help="e.g. configs/phase-cells.yaml")
    p.add_argument("--out", default=None, help="folder to save the bundle in (default: per config)")
    p.add_argument("--data", default=None, help="data root (default: $CULTURESEG_DATA or the config's)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a model on images with ground truth")
    p.add_argument("data", help="folder with <id>_image.<ext> and <id>_<class>.tif")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--split", choices=["val", "all"], default="val",
                   help="val: only the model card's validation images (default); all: every image")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--record", action="store_true",
                   help="store the metrics in the model's config.json and card.md")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="open napari with the Segment widget on a sample image")
    p.add_argument("--sample", default="synthetic",
                   help="'synthetic' (a generated phase-contrast culture, default), 'cell' "
                        "(scikit-image's real phase-contrast cell, high magnification) or an image path")
    p.add_argument("--model", default=None, help="model to select (default: the default model)")
    p.add_argument("--screenshot", default=None, help="segment, save a window screenshot here, exit")
    p.set_defaults(func=cmd_demo)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # our errors say what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
