"""The ``cultureseg`` commands about models: ``models`` (list), ``train``, ``evaluate``,
``export`` and ``import`` (bioimage.io packages)."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_models(args) -> int:
    from ..core.bundle_config import BundleError
    from ..core.bundles import DEFAULT_MODEL, Bundle, list_bundles

    found = list_bundles()
    if not found:
        print("no models installed")
        return 1
    bad = 0
    for name, path in found.items():
        try:
            cfg = Bundle.load(path).config
        except (BundleError, ValueError, OSError) as exc:
            print(f"{name}: UNREADABLE ({exc})\n    {path}")
            bad += 1
            continue
        classes = ", ".join(
            c.name
            + (f" = {c.description.split('.')[0]}" if len(c.name) <= 3 and c.description else "")
            + (" (+instances)" if c.instances else "")
            + (f" (splitting {c.seed_threshold:g})" if c.separate == "distance" else "")
            for c in cfg.classes
        ) + "".join(f", {d.name} (derived)" for d in cfg.derived)
        if cfg.tta != 1:
            classes += f"; test-time augmentation {cfg.tta} copies"
        mark = " [default]" if name == DEFAULT_MODEL else ""
        trained = "" if cfg.lineage.get("steps") else "  UNTRAINED"
        scale = (
            f"; trained at {cfg.scale.reference} diameter {cfg.scale.diameter:g} px"
            if cfg.scale.diameter
            else ""
        )
        print(f"{name}{mark}: {cfg.modality}; classes: {classes}{trained}{scale}\n    {path}")
    return 1 if bad == len(found) else 0


def cmd_train(args) -> int:
    from tqdm import tqdm

    from ..core.training import train_from_config

    with tqdm(desc="training", unit="step", disable=args.quiet) as bar:

        def report(r):
            bar.total = r.total_steps
            bar.update(r.step - bar.n)
            post = {"loss": f"{r.loss:.4f}"}
            if r.val_dice:
                post.update({k: f"{v:.3f}" for k, v in r.val_dice.items()})
            bar.set_postfix(post, refresh=False)

        path = train_from_config(
            args.config,
            out_dir=args.out,
            on_report=report,
            data_root=args.data,
            threads=args.threads,
        )
    print(f"saved {path}")
    return 0


def cmd_evaluate(args) -> int:
    import json

    from ..core.bundles import load_bundle
    from ..core.evaluate import evaluate, format_table, truth_from_folder

    bundle = load_bundle(args.model)
    names = [c.name for c in bundle.config.classes] + [d.name for d in bundle.config.derived]
    only = None
    if args.split in ("val", "test"):
        key = "validation_ids" if args.split == "val" else "test_ids"
        ids = bundle.config.card.get(key)
        if not ids:
            print(
                f"error: the model card lists no {args.split} images; use --split all",
                file=sys.stderr,
            )
            return 2
        only = set(ids)
    truths = truth_from_folder(args.data, names, only=only)
    diameter = None if args.diameter == "none" else args.diameter
    if diameter not in (None, "auto", "truth"):
        diameter = float(diameter)
    result = evaluate(
        bundle,
        truths,
        device=args.device,
        diameter=diameter,
        tta=args.tta,
        runtime=args.runtime,
        on_image=None if args.quiet else lambda n: print(f"  {n}", file=sys.stderr),
    )
    result.update(
        {
            "model": bundle.config.name,
            "data": str(args.data),
            "split": args.split,
            "diameter": args.diameter,
            "tta": args.tta if args.tta is not None else bundle.config.tta,
            "runtime": args.runtime,
        }
    )
    print(f"{bundle.config.name} on {len(truths)} images of {args.data} ({args.split})")
    print(format_table(result))
    if args.json:
        from ..core.atomic import write_atomic

        text = json.dumps(result, indent=2) + "\n"
        write_atomic(Path(args.json), lambda tmp: tmp.write_text(text))
    if args.record:
        from ..core.cards import record_evaluation

        result["command"] = (
            f"cultureseg evaluate {Path(args.data).as_posix()} --model "
            f"{bundle.config.name} --split {args.split}"
            + (f" --diameter {args.diameter}" if args.diameter != "auto" else "")
            + (f" --tta {args.tta}" if args.tta is not None else "")
        )
        record_evaluation(bundle.path, result)
        print(f"recorded in {bundle.path}/config.json and card.md")
    return 0


def cmd_export(args) -> int:
    from ..core.bioimageio import export_package
    from ..core.bundle_config import BundleError
    from ..core.bundles import load_bundle

    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        print(
            "error: exporting needs bioimageio.spec and bioimageio.core: "
            "pip install 'napari-cultureseg[bioimageio]'",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; give another name or --overwrite", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(args.model)
        export_package(bundle, out, test=not args.no_test)
    except (BundleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tested = "" if args.no_test else ", tested by bioimageio.core"
    print(f"wrote {out} (bioimage.io model{tested})")
    return 0


def cmd_import(args) -> int:
    from ..core.bioimageio import import_package
    from ..core.bundle_config import BundleError, safe_name
    from ..core.bundles import Bundle, user_models_dir

    name = args.name or Path(args.package).stem  # phase-cells.zip -> phase-cells
    try:
        dest = user_models_dir() / safe_name(name)
    except ValueError as exc:
        print(f"error: {exc}; give --name", file=sys.stderr)
        return 2
    if dest.exists():
        print(f"error: a model {name!r} is installed already; give --name", file=sys.stderr)
        return 2
    try:
        path = import_package(args.package, dest)
    except (BundleError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cfg = Bundle.load(path).config
    print(f"installed {cfg.name} in {path}: {', '.join(cfg.class_names)}")
    return 0
