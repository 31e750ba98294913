"""``cultureseg segment`` (a batch of images or plate fields to mask files) and
``cultureseg plate`` (what a plate folder holds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .paths import (
    OutputError,
    _check_out_dir,
    _images_in,
    _inside,
    _is_ome_zarr_plate,
    _ome_zarr_fields,
    output_stems,
)


def cmd_plate(args) -> int:
    from ..core.plate import discover_plate

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

    from ..core.atomic import write_atomic
    from ..core.batch import run_fields
    from ..core.batch_outputs import (
        TABLES,
        FieldJob,
        finished,
        output_files,
        own_outputs,
        read_record,
        record_outputs,
        write_tables,
    )
    from ..core.bundle_config import safe_name
    from ..core.bundles import load_bundle

    _check_options(args)
    bundle = load_bundle(args.model)
    cfg = bundle.config
    seeds = _splitting(args.splitting, cfg)
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
        "seeds": seeds,
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
        from ..core.plate import field_of
        from ..core.tables import write_csv

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


def _splitting(values: list[str], cfg) -> dict[str, float]:
    """``--splitting CLASS=LEVEL`` (repeated) as ``{class: level}``, checked against the
    model's classes before anything is segmented."""
    from ..core.segmentation import seeded_classes

    seeds: dict[str, float] = {}
    for v in values or []:
        name, _, level = v.partition("=")
        try:
            seeds[name.strip()] = float(level)
        except ValueError:
            raise ValueError(
                f"--splitting {v!r}: give CLASS=LEVEL, e.g. --splitting nucleus=0.4"
            ) from None
    try:
        seeded_classes(cfg.classes, seeds)
    except ValueError as exc:
        raise ValueError(f"--splitting: {exc}") from None
    return seeds


def _check_options(args) -> None:
    """Refuse option values that cannot mean what the user wants, with what to give instead."""
    if getattr(args, "format", "tif") == "ome-zarr":
        from ..core.omezarr import need

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
