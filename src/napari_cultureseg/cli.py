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
from .core.runtimes import RUNTIMES

"""Written into ``--out``: the files this tool wrote there, never taken as inputs again."""


class OutputError(ValueError):
    """An output folder or file that cannot be written as asked; the message says what to do."""


def _is_output_name(name: str, classes: list[str], stems: set[str]) -> bool:
    """Whether ``name`` is a mask or output of another image in its folder (``stems``):
    ``<stem>_<class>``, ``<stem>_<class>_instances`` or ``<stem>_<class>_prob``, or any
    ``*_<class>_instances`` / ``*_<class>_prob`` of a model with ``classes``."""
    stem = name.rsplit(".", 1)[0]
    if any(stem.endswith(f"_{c}{tail}") for c in classes for tail in ("_instances", "_prob")):
        return True
    return any(stem == f"{other}_{c}" for c in classes for other in stems if other != stem)


def _images_in(paths: list[str], classes: list[str] | None = None) -> list[Path]:
    """Expand folders into the image files they hold.

    Where ``*_image.*`` files mark the images, only those are taken (their
    masks lie beside them). Otherwise every image file is taken except this
    tool's own outputs and masks: the files listed in the folder's output
    manifest, ``X_<class>.tif`` beside an image ``X.*`` (a mask of X), and
    ``*_<class>_instances`` / ``*_<class>_prob`` files of the model's classes.
    Files named explicitly are always taken; an OME-Zarr image (a folder) is one image.
    """
    from .core.omezarr import is_image

    classes = classes or []
    out: list[Path] = []
    for p in map(Path, paths):
        try:
            is_dir = p.is_dir()
        except OSError:  # a path the file system cannot even look up: reading it will say so
            is_dir = False
        if is_dir and is_image(p):  # an OME-Zarr image is one image, not a folder of them
            out.append(p)
        elif is_dir:
            files = sorted(
                f
                for f in p.iterdir()
                if f.suffix.lower() in SUFFIXES and not f.name.startswith(".")
            )
            marked = [f for f in files if f.stem.endswith("_image")]
            from .core.batch import own_outputs

            own = own_outputs(p)
            stems = {f.stem for f in files}
            out.extend(
                marked
                or [
                    f
                    for f in files
                    if f.name not in own and not _is_output_name(f.name, classes, stems)
                ]
            )
        else:
            out.append(p)
    return out


def _is_ome_zarr_plate(arg: str) -> bool:
    from .core.omezarr import is_plate

    try:
        return is_plate(arg)
    except OSError:
        return False


def _ome_zarr_fields(args: list[str], channel: str | None) -> dict[Path, tuple[str, int]]:
    """The fields of the OME-Zarr HCS plates among ``args``: ``{image folder: (output stem,
    plane of ``channel``)}``, the stem the field's key (``A01_f1``)."""
    from .core.plate import discover_plate

    out = {}
    for arg in args:
        if not _is_ome_zarr_plate(arg):
            continue
        plate = discover_plate(arg)
        if channel is not None and channel not in plate.channels:
            raise ValueError(
                f"--channel {channel!r} is not a channel of {arg}; it has "
                f"{', '.join(repr(c) for c in plate.channels)}"
            )
        for f in plate.fields:
            out[f.path(channel)] = (f.stem, f.channel_plane(channel))
    return out


def output_stems(images: list[Path]) -> dict[Path, str]:
    """A distinct output stem per input image.

    ``well_A1.tif`` → ``well_A1`` (``X_image.png`` → ``X``); when two inputs
    share a stem, both keep their extension (``a.tif``, ``a.png``), and when
    that still collides (the same name in two folders) the folder's name is
    put in front; a last resort numbers them.
    """
    from collections import Counter

    def stem(p: Path) -> str:
        if p.suffix.lower() == ".zarr":  # an OME-Zarr image: well.ome.zarr -> well
            return p.name[: -len(".zarr")].removesuffix(".ome").removesuffix("_image")
        return p.stem.removesuffix("_image")

    names = {p: stem(p) for p in images}
    for make in (
        lambda p: f"{stem(p)}{p.suffix.lower().replace('.', '_')}",
        lambda p: f"{p.parent.name}_{stem(p)}{p.suffix.lower().replace('.', '_')}",
    ):
        counts = Counter(names.values())
        names = {p: make(p) if counts[n] > 1 else n for p, n in names.items()}
    counts, seen = Counter(names.values()), Counter()
    for p, n in list(names.items()):
        if counts[n] > 1:
            seen[n] += 1
            names[p] = f"{n}_{seen[n]}"
    return names


def _check_out_dir(out: Path) -> Path:
    """Create ``--out`` (or say why it cannot be), and return it resolved."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; give a folder for the masks")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"--out {out} cannot be created ({exc.strerror or exc}); give a folder you can write to"
        ) from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out} is not writable; give a folder you can write to")
    return out.resolve()


def _inside(out: Path, name: str) -> Path:
    """``out / name``, refused unless it lies directly inside ``out``."""
    path = (out / name).resolve()
    if path.parent != out or "/" in name or "\\" in name:
        raise OutputError(
            f"output name {name!r} would be written outside --out {out}; the "
            "model's class names must be plain names"
        )
    return path


def cmd_models(args) -> int:
    from .core.bundles import DEFAULT_MODEL, Bundle, BundleError, list_bundles

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
            for c in cfg.classes
        ) + "".join(f", {d.name} (derived)" for d in cfg.derived)
        mark = " [default]" if name == DEFAULT_MODEL else ""
        trained = "" if cfg.lineage.get("steps") else "  UNTRAINED"
        scale = (
            f"; trained at {cfg.scale.reference} diameter {cfg.scale.diameter:g} px"
            if cfg.scale.diameter
            else ""
        )
        print(f"{name}{mark}: {cfg.modality}; classes: {classes}{trained}{scale}\n    {path}")
    return 1 if bad == len(found) else 0


def cmd_plate(args) -> int:
    from .core.plate import discover_plate

    plate = discover_plate(args.folder, args.pattern)
    rows, cols = plate.shape
    per_well = {w: len(plate.fields_of(w)) for w in plate.wells}
    counts = sorted(set(per_well.values()))
    fields = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    channels = ", ".join(c or "(one, unnamed)" for c in plate.channels)
    print(
        f"{plate.root}: {plate.layout} layout, a {rows * cols}-well plate ({rows} x {cols}); "
        f"{len(plate.wells)} wells, {fields} fields each, {len(plate.fields)} fields; "
        f"channels: {channels}"
    )
    if args.list:
        for f in plate.fields:
            files = ", ".join(
                f"{c or '-'}: "
                + (f"{p.relative_to(plate.root)} plane {f.planes[c]}" if f.planes else p.name)
                for c, p in f.channels.items()
            )
            print(f"  {f.key}  {files}")
    if plate.ignored:
        shown = ", ".join(p.name for p in plate.ignored[:5])
        more = f" and {len(plate.ignored) - 5} more" if len(plate.ignored) > 5 else ""
        print(f"not read as fields ({len(plate.ignored)}): {shown}{more}")
    return 0


def cmd_segment(args) -> int:
    from tqdm import tqdm

    from .core.batch import (
        TABLES,
        FieldJob,
        finished,
        output_files,
        own_outputs,
        read_record,
        record_outputs,
        run_fields,
        write_atomic,
        write_tables,
    )
    from .core.bundles import load_bundle, safe_name

    _check_options(args)
    bundle = load_bundle(args.model)
    cfg = bundle.config
    names = [c.name for c in cfg.classes] + [d.name for d in cfg.derived]
    for n in names:
        safe_name(n, what=f"class name of model {cfg.name!r}")
    fields = _ome_zarr_fields(args.images, args.channel)  # {image folder: (stem, plane)}
    images = _images_in([a for a in args.images if not _is_ome_zarr_plate(a)], names)
    images += list(fields)
    if not images:
        print("no images found in " + " ".join(args.images), file=sys.stderr)
        return 2
    out = _check_out_dir(Path(args.out))
    stems = {**output_stems(images), **{p: stem for p, (stem, _) in fields.items()}}
    shared = sorted({s for s in stems.values() if list(stems.values()).count(s) > 1})
    if shared:  # an OME-Zarr plate's A01_f1 beside an image A01_f1.tif: one would overwrite
        raise OutputError(
            f"two inputs would write the same outputs ({', '.join(shared[:4])}); "
            "segment them into different --out folders"
        )
    # every output of the batch, decided before anything is written
    planned: dict[Path, list[str]] = {}
    for path in images:
        planned[path] = list(
            output_files(stems[path], cfg.classes, cfg.derived, prob=args.prob, fmt=args.format)
        )
    tables = list(TABLES) if args.table else []
    tables += ["rank.csv"] if args.rank else []
    inputs = {p.resolve() for p in images}
    clash, failed, earlier = [], 0, []
    for path, files in list(planned.items()):
        # with --resume, a field an earlier run started owns its files (whole or absent)
        own = args.resume and read_record(out, stems[path]) is not None
        try:
            for f in files:
                target = _inside(out, f)
                if target in inputs:
                    raise OutputError(
                        f"{f} in --out {out} is one of the input images; write "
                        "the masks to another folder"
                    )
                if target.exists() and not (args.overwrite or own):
                    clash.append(f)
        except OSError as exc:  # e.g. a name too long for the file system: this image alone
            print(
                f"failed: {path}: its masks cannot be named in --out ({exc.strerror or exc}); "
                "rename the image with a shorter name",
                file=sys.stderr,
            )
            del planned[path]
            failed += 1
        if not args.resume and read_record(out, stems[path]) is not None:
            earlier.append(stems[path])
    ours = own_outputs(out)  # a resumed run rewrites only the tables a run of ours wrote
    clash += [
        t
        for t in tables
        if _inside(out, t).exists() and not (args.overwrite or (args.resume and t in ours))
    ]
    if clash or (earlier and not args.overwrite):
        shown = ", ".join(clash[:4]) + (f" and {len(clash) - 4} more" if len(clash) > 4 else "")
        what = (
            f"{len(clash)} output file(s) exist already in {out} ({shown})"
            if clash
            else f"an earlier run left records of {len(earlier)} field(s) in {out} "
            f"({', '.join(earlier[:4])})"
        )
        raise OutputError(
            f"{what}; nothing was written. Give another --out, --resume to continue an "
            "interrupted run there, or --overwrite to replace them"
        )
    workers = max(1, args.workers)
    threads = args.threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0)
    options = {
        "device": args.device,
        "tile": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "diameter": args.diameter,
        "pixel_size": args.pixel_size,
        "tta": args.tta,
        "runtime": args.runtime,
        "plane": args.plane,
        "prob": args.prob,
        "table": args.table,
        "format": args.format,
        "threads": threads,
        "block": args.block,
    }
    jobs = [
        FieldJob(
            str(path),
            stems[path],
            str(out),
            tuple(files),
            args.model,
            {**options, "plane": fields[path][1]} if path in fields else options,
        )
        for path, files in planned.items()
    ]
    results = {}
    if args.resume:
        for job in jobs:
            if (done := finished(job)) is not None:
                results[job.stem] = done
        if results and not args.quiet:
            print(f"resuming: {len(results)} of {len(jobs)} field(s) were done already")
    todo = [j for j in jobs if j.stem not in results]
    parallel = workers > 1 or bool(args.scheduler)
    fields = tqdm(
        total=len(jobs),
        initial=len(results),
        desc="fields",
        unit="field",
        disable=args.quiet or not parallel,
    )
    tiles = tqdm(desc="tiles", unit="tile", leave=False, disable=args.quiet or parallel)

    def progress(done, total):
        tiles.total = total
        tiles.update(done - tiles.n)

    with fields, tiles:
        for r in run_fields(
            todo,
            workers=workers,
            scheduler=args.scheduler,
            progress=None if parallel else progress,
        ):
            tiles.reset()
            fields.update(1)
            if r.error:
                failed += 1
                fields.write(f"failed: {r.path}: {r.error}", file=sys.stderr)
                continue
            results[r.stem] = r
            record_outputs(out, r.files)
            if not args.quiet:
                fields.write(f"{Path(r.path).name}: {r.summary}")
    done = [results[j.stem] for j in jobs if j.stem in results]  # in the images' order
    if args.table:
        write_tables(out, done)
        if not args.quiet:
            print(f"tables: {out / 'objects.csv'}, {out / 'wells.csv'}")
    if args.rank:
        from .core.plate import field_of
        from .core.tables import write_csv

        ranked = sorted(
            (r for r in done if r.uncertainty is not None), key=lambda r: -r.uncertainty
        )
        rows = [
            {
                "rank": i + 1,
                "image": r.stem,
                "well": field_of(r.path)[0],
                "field": field_of(r.path)[1],
                "uncertainty": r.uncertainty,
            }
            for i, r in enumerate(ranked)
        ]
        write_atomic(_inside(out, "rank.csv"), lambda tmp: write_csv(tmp, rows))
        if not args.quiet:
            print(f"correct next: {out / 'rank.csv'} (most uncertain field first)")
    if tables:
        record_outputs(out, tables)
    if failed:
        print(
            f"{failed} of {len(images)} image(s) failed; the others were segmented", file=sys.stderr
        )
    return 1 if failed else 0


def _check_options(args) -> None:
    """Refuse option values that cannot mean what the user wants, with what to give instead."""
    if getattr(args, "format", "tif") == "ome-zarr":
        from .core.omezarr import need

        need()
    if args.overlap is not None and not 0.0 <= args.overlap <= 0.9:
        raise ValueError(
            f"--overlap {args.overlap} is outside 0-0.9; give a fraction of the tile, e.g. 0.25"
        )
    if args.tile is not None and not 32 <= args.tile <= 4096:
        raise ValueError(f"--tile {args.tile} is outside 32-4096 pixels; e.g. --tile 512")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be at least 1")
    if args.threads is not None and args.threads < 0:
        raise ValueError(f"--threads {args.threads} must be 0 (all cores) or more")
    if getattr(args, "workers", 1) < 1:
        raise ValueError(f"--workers {args.workers} must be at least 1")
    if args.diameter not in (None, "auto", "none"):
        try:
            d = float(args.diameter)
        except ValueError:
            raise ValueError(
                f"--diameter {args.diameter!r}: give auto, none or a number of pixels"
            ) from None
        if not d > 0:
            raise ValueError(f"--diameter {args.diameter} must be a positive number of pixels")
    if args.pixel_size is not None and not args.pixel_size > 0:
        raise ValueError(f"--pixel-size {args.pixel_size} must be a positive number of µm")


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

    from .core.bundles import load_bundle
    from .core.evaluate import evaluate, format_table, truth_from_folder

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
            "tta": args.tta,
            "runtime": args.runtime,
        }
    )
    print(f"{bundle.config.name} on {len(truths)} images of {args.data} ({args.split})")
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.record:
        from .core.cards import record_evaluation

        result["command"] = (
            f"cultureseg evaluate {Path(args.data).as_posix()} --model "
            f"{bundle.config.name} --split {args.split}"
            + (f" --diameter {args.diameter}" if args.diameter != "auto" else "")
            + (f" --tta {args.tta}" if args.tta != 1 else "")
        )
        record_evaluation(bundle.path, result)
        print(f"recorded in {bundle.path}/config.json and card.md")
    return 0


def cmd_demo(args) -> int:
    from ._demo import has_display, rerun_under_xvfb
    from ._demo import main as demo

    if not has_display():
        return rerun_under_xvfb(sys.argv[1:])
    return demo(sample=args.sample, model=args.model, screenshot=args.screenshot)


def cmd_export(args) -> int:
    from .core.bioimageio import export_package
    from .core.bundles import BundleError, load_bundle

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
    from .core.bioimageio import import_package
    from .core.bundles import Bundle, BundleError, safe_name, user_models_dir

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


def build_parser() -> argparse.ArgumentParser:
    from .core.bundles import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="cultureseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list installed models and their classes")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("segment", help="segment images or folders; one mask TIFF per class")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model name or bundle folder (default {DEFAULT_MODEL})",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--prob", action="store_true", help="also write <image>_<class>_prob.tif")
    p.add_argument(
        "--format",
        choices=("tif", "ome-zarr"),
        default="tif",
        help="tif: one mask TIFF per class (default); ome-zarr: one <image>.ome.zarr per "
        "image, the image and its masks as coloured, named label images (napari-ome-zarr, "
        "Fiji, QuPath read them; needs pip install 'napari-cultureseg[ome-zarr]')",
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="also write objects.csv (one row per object: size, shape, intensity, which "
        "objects of other classes hold or touch it) and wells.csv (per well of a plate, "
        "or per image: counts, confluence %%, mean object area)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="auto (default: onnx on a CPU, torch on a GPU), torch, or onnx: ONNX Runtime, "
        "about twice as fast on a CPU with the same masks (the network is exported once "
        "to $CULTURESEG_HOME/cache/onnx)",
    )
    p.add_argument("--tile", type=int, default=None, help="tile size (default: the model's)")
    p.add_argument(
        "--overlap", type=float, default=None, help="tile overlap fraction (default: the model's)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per forward pass (default: 1 on the CPU; on a GPU as many as fit in half "
        "its free memory, fewer if it runs out)",
    )
    p.add_argument("--plane", type=int, default=None, help="plane of a multi-plane file to segment")
    p.add_argument(
        "--block",
        type=int,
        default=None,
        help="segment TIFFs block by block, blocks of this side in pixels, read from disk as "
        "they are needed (default: only TIFF planes above 6144x6144 pixels, whole-well "
        "mosaics, in blocks of 2048; 0: never); their masks are written as tiled TIFFs",
    )
    p.add_argument(
        "--channel",
        default=None,
        help="the channel to segment in an OME-Zarr plate (its name, as `cultureseg plate` "
        "lists them; default: the first)",
    )
    p.add_argument(
        "--diameter",
        default="auto",
        help="object diameter in the images, in pixels (of the model's reference "
        "class, see `cultureseg models`); 'auto' (default) estimates it per "
        "image, 'none' segments at the images' own scale",
    )
    p.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        help="pixel size in µm, for models that know their own",
    )
    p.add_argument(
        "--tta",
        type=int,
        choices=[1, 2, 4, 8],
        default=1,
        help="test-time augmentation: average 2, 4 or 8 flipped/rotated copies "
        "(as many times slower)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that exist already (default: refuse)",
    )
    p.add_argument(
        "--rank",
        action="store_true",
        help="also write rank.csv: the fields by the model's uncertainty (mean entropy of "
        "its class probabilities), most uncertain first: the ones to correct next",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out: fields it finished are kept, the "
        "others are segmented (again)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="fields segmented at once, each in its own process on a local dask cluster "
        "(default 1: one after the other); the cores are shared between them",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="address of a running dask.distributed scheduler (e.g. tcp://host:8786) to "
        "segment the fields on its workers; they must see the images and --out at the "
        "same paths",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch per field (default: all cores, shared among --workers)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("train", help="train a model from a YAML config (see configs/)")
    p.add_argument("--config", required=True, help="e.g. configs/phase-cells.yaml")
    p.add_argument("--out", default=None, help="folder to save the bundle in (default: per config)")
    p.add_argument(
        "--data", default=None, help="data root (default: $CULTURESEG_DATA or the config's)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: all cores)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="write a model as a bioimage.io model package (.zip)")
    p.add_argument("model", help="model name or bundle folder")
    p.add_argument("out", help="the package to write, e.g. phase-cells.zip")
    p.add_argument("--format", choices=["bioimageio"], default="bioimageio")
    p.add_argument(
        "--no-test", action="store_true", help="do not run bioimageio.core's test of the package"
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="install a model from a package `cultureseg export` wrote")
    p.add_argument("package", help="the .zip")
    p.add_argument(
        "--name", default=None, help="install under this name (default: the file's, without .zip)"
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("evaluate", help="metrics of a model on images with ground truth")
    p.add_argument("data", help="folder with <id>_image.<ext> and <id>_<class>.tif")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--split",
        choices=["test", "val", "all"],
        default="test",
        help="test: only the model card's test images, which no training choice saw "
        "(default); val: its validation images; all: every image",
    )
    p.add_argument(
        "--diameter",
        default="auto",
        help="object size per image: auto (estimated, default), none, truth (from "
        "the reference masks: an oracle) or pixels",
    )
    p.add_argument("--tta", type=int, choices=[1, 2, 4, 8], default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto", help="auto, torch or onnx (CPU)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument(
        "--record",
        action="store_true",
        help="store the metrics in the model's config.json and card.md",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plate", help="show the wells, fields and channels found in a plate folder")
    p.add_argument("folder", help="the folder of the plate's images")
    p.add_argument(
        "--pattern",
        default="auto",
        help="auto (default), well_field (A01_s1.tif), imagexpress (<plate>_A01_s1_w1.tif), "
        "operetta (r01c01f01p01-ch1sk1fk1fl1.tiff) or a pattern such as "
        '"{well}_{field}.tif" (fields: well, row, col, field, channel, plane, time, plate, any)',
    )
    p.add_argument("--list", action="store_true", help="list every field and its files")
    p.set_defaults(func=cmd_plate)

    p = sub.add_parser("demo", help="open napari with the Segment widget on a sample image")
    p.add_argument(
        "--sample",
        default="synthetic",
        help="'synthetic' (a generated phase-contrast culture, default), 'cell' "
        "(scikit-image's real phase-contrast cell, high magnification), 'tumour' (a synthetic "
        "culture on vessels, six classes), 'spheroid' (a synthetic bright-field well) or an "
        "image path; each sample selects the model that fits it",
    )
    p.add_argument("--model", default=None, help="model to select (default: the sample's)")
    p.add_argument(
        "--screenshot", default=None, help="segment, save a window screenshot here, exit"
    )
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
