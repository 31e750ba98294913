"""Segment many fields: one job per field, resumable, in this process or on a dask cluster.

A folder or a plate is a list of :class:`FieldJob` s. :func:`run_field` does one
field from its image to its files: read, estimate the object size, segment,
write every mask atomically (a temporary file renamed into place), measure its
objects for the tables. Each field keeps a small *record* in ``--out``
(``.cultureseg-fields/<stem>.json``): written before the first mask, saying
which files the field owns, and rewritten with ``"done": true`` and the field's
table rows after the last one. So a run killed at any moment (``kill -9``, a
power cut) leaves every field either done (its record says so and every file
it lists is whole) or not done (its files, whole or absent, are its own and are
written again); a resumed run skips the first and redoes the second, and no
finished field is lost or computed twice.

:func:`run_fields` runs the jobs one after the other here, or spreads them over
dask workers (:mod:`distributed`): a local cluster of ``workers`` processes,
each with its share of the cores for torch, or an existing cluster at a
scheduler address. Results come back as fields finish, in any order.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RECORDS = ".cultureseg-fields"
"""Folder in ``--out`` with one record per field (see the module docstring)."""


@dataclass(frozen=True)
class FieldJob:
    """One field to segment: its image, its outputs, and how to segment it."""

    path: str
    stem: str
    out: str
    files: tuple[str, ...]
    """Every file this field writes into ``out`` (masks, instances, probabilities)."""
    model: str
    """A bundled model's name or a bundle folder (each worker loads it once)."""
    options: dict = field(default_factory=dict)
    """``device``, ``tile``, ``overlap``, ``batch_size``, ``diameter``, ``pixel_size``,
    ``tta``, ``runtime``, ``plane``, ``prob``, ``table``, ``threads`` (as the CLI's options)."""


@dataclass
class FieldDone:
    """What one field gave: its files, a one-line summary, its table rows, or its error."""

    stem: str
    path: str
    files: list[str] = field(default_factory=list)
    summary: str = ""
    rows: list[dict] = field(default_factory=list)
    field_record: dict | None = None
    error: str | None = None
    skipped: bool = False
    """True when an earlier run had finished it (nothing was computed now)."""
    uncertainty: float | None = None
    """:meth:`segment.Segmentation.uncertainty` of the field (ranks what to correct next)."""


MANIFEST = ".cultureseg-outputs.json"
"""File in ``--out`` listing every output our runs wrote there (tables are rewritten only
when listed: a user's own ``objects.csv`` is never replaced)."""


def own_outputs(out: str | Path) -> set[str]:
    """The names of the files our runs wrote into ``out`` (see :data:`MANIFEST`)."""
    try:
        return set(json.loads((Path(out) / MANIFEST).read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        return set()


def record_outputs(out: str | Path, names) -> None:
    """Add ``names`` to the outputs of ours in ``out`` (atomically)."""
    out = Path(out)
    files = sorted(own_outputs(out) | set(names))
    write_atomic(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps({"files": files}) + "\n"))


TABLES = ("objects.csv", "wells.csv")


def write_tables(out: str | Path, done: Sequence[FieldDone]) -> list[Path]:
    """``objects.csv`` (one row per object) and ``wells.csv`` (one per well) of the
    finished fields ``done`` (in the order given), each written atomically; their paths."""
    from .tables import well_rows, write_csv

    objects = [row for r in done for row in r.rows]
    records = [r.field_record for r in done if r.field_record]
    paths = []
    for name, rows in zip(TABLES, (objects, well_rows(records)), strict=True):
        path = Path(out) / name
        write_atomic(path, lambda tmp, r=rows: write_csv(tmp, r))
        paths.append(path)
    return paths


def record_path(out: str | Path, stem: str) -> Path:
    return Path(out) / RECORDS / f"{stem}.json"


def read_record(out: str | Path, stem: str) -> dict | None:
    """A field's record, or None when it has none or it cannot be read."""
    try:
        rec = json.loads(record_path(out, stem).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def finished(job: FieldJob) -> FieldDone | None:
    """The result of ``job`` from an earlier run, if that run finished it: its record says
    done, for the same files and the same image and plane, and every file is there."""
    rec = read_record(job.out, job.stem)
    if not rec or not rec.get("done") or tuple(rec.get("files", ())) != job.files:
        return None
    source = rec.get("source")  # another channel of the field (or another image) is not it
    if source is not None and source != _source(job):
        return None
    if not all((Path(job.out) / f).exists() for f in job.files):  # (an OME-Zarr is a folder)
        return None
    return FieldDone(
        job.stem,
        job.path,
        list(job.files),
        rec.get("summary", ""),
        rec.get("rows", []),
        rec.get("field"),
        skipped=True,
        uncertainty=rec.get("uncertainty"),
    )


def _plain(value):
    """JSON for numpy scalars in table rows."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot record {type(value).__name__}")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary path)``, then rename it to ``path``: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _source(job: FieldJob) -> dict:
    """What a field was segmented from: its image (resolved) and plane."""
    return {"image": str(Path(job.path).resolve()), "plane": job.options.get("plane")}


def _write_record(job: FieldJob, **content) -> None:
    path = record_path(job.out, job.stem)
    path.parent.mkdir(exist_ok=True)
    text = json.dumps({"files": list(job.files), "source": _source(job), **content}, default=_plain)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_tif(path: Path, data) -> None:
    """Write a zlib TIFF atomically."""
    import tifffile

    write_atomic(path, lambda tmp: tifffile.imwrite(tmp, data, compression="zlib"))


def output_files(
    stem: str, classes, derived=(), *, prob: bool = False, fmt: str = "tif"
) -> tuple[str, ...]:
    """Every file one field writes into ``--out``: ``<stem>_<class>.tif`` per class and
    derived class, ``<stem>_<class>_instances.tif`` per counted class, and with
    ``prob`` ``<stem>_<class>_prob.tif`` per predicted class; with ``fmt="ome-zarr"``
    one OME-Zarr image ``<stem>.ome.zarr`` holding the image and every mask as a label
    image (:mod:`.omezarr`), and the probabilities as TIFFs."""
    if fmt not in ("tif", "ome-zarr"):
        raise ValueError(f"output format must be tif or ome-zarr, not {fmt!r}")
    if fmt == "ome-zarr":
        probs = tuple(f"{stem}_{c.name}_prob.tif" for c in classes) if prob else ()
        return (f"{stem}.ome.zarr", *probs)
    files = [f"{stem}_{n}.tif" for n in [c.name for c in classes] + [d.name for d in derived]]
    files += [f"{stem}_{c.name}_instances.tif" for c in classes if c.instances]
    files += [f"{stem}_{c.name}_prob.tif" for c in classes] if prob else []
    return tuple(files)


def _planned(job: FieldJob, name: str) -> Path:
    """``job.out / name``, refused unless ``name`` is one of the files planned (and checked to
    lie inside ``--out``) for this field: nothing else is ever written."""
    if name not in job.files:
        raise ValueError(f"{name} was not planned for {job.stem}; nothing else is written")
    return Path(job.out) / name


def run_field(job: FieldJob, progress: Callable[[int, int], None] | None = None) -> FieldDone:
    """Segment one field and write its files (see the module docstring).

    ``progress(done, total)`` is called per tile. A field that cannot be read,
    segmented or written comes back with ``error`` set (what to do, in words);
    nothing else is affected.
    """
    from .images import ImageError, read_image, release_memory
    from .scale import choose_zoom
    from .segment import segment

    o = job.options
    try:
        if o.get("threads"):
            import torch

            torch.set_num_threads(int(o["threads"]))
        from .bundles import load_bundle

        bundle = load_bundle(job.model)  # cached per process
        if is_mosaic(job):
            return _run_mosaic(job, bundle, progress)
        plane = read_image(job.path, plane=o.get("plane"))
        zoom, how = choose_zoom(
            bundle,
            plane,
            diameter=o.get("diameter", "auto"),
            pixel_size=o.get("pixel_size"),
            path=Path(job.path),
            device=o.get("device", "auto"),
        )
        release_memory()  # a mosaic's stages each start from a clean heap
        gen = segment(
            bundle,
            plane,
            device=o.get("device", "auto"),
            tile=o.get("tile"),
            overlap=o.get("overlap"),
            batch_size=o.get("batch_size"),
            zoom=zoom,
            tta=o.get("tta", 1),
            runtime=o.get("runtime", "auto"),
        )
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            if progress is not None:
                progress(p.done, p.total)
        gray = None
        if o.get("table"):  # the plane's mean intensity per object, in gray
            gray = plane.mean(axis=-1, dtype="float32") if plane.ndim == 3 else plane
        del plane
        release_memory()
        _write_record(job, done=False)  # from here on these files are this field's own
        masks = result.masks()
        objects = {}
        zarr_out = o.get("format") == "ome-zarr"
        for name, mask in masks.items():
            if not zarr_out:
                write_tif(_planned(job, f"{job.stem}_{name}.tif"), mask.astype("uint8"))
            if getattr(result.spec(name), "instances", False):
                release_memory()
                objects[name] = result.instances(name, mask)
                if not zarr_out:
                    write_tif(_planned(job, f"{job.stem}_{name}_instances.tif"), objects[name])
        if zarr_out:
            from .omezarr import write_field

            colours = {c.name: c.colour for c in [*result.classes, *result.derived]}
            image = read_image(job.path, plane=o.get("plane"))  # freed above for the masks' room
            named = {f"{name}_instances": labels for name, labels in objects.items()}
            write_field(_planned(job, f"{job.stem}.ome.zarr"), image, masks, colours, named)
            del image
        if o.get("prob"):
            for k, c in enumerate(result.classes):
                write_tif(_planned(job, f"{job.stem}_{c.name}_prob.tif"), result.probability(k))
        rows, rec = (
            table_rows(Path(job.path), job.stem, masks, objects, gray)
            if o.get("table")
            else ([], None)
        )
        summary = ", ".join(f"{n} {100 * m.mean():.1f}%" for n, m in masks.items())
        summary += f" ({how}, zoom {zoom:.2f})"
        unsure = round(result.uncertainty(), 6)
        _write_record(job, done=True, summary=summary, rows=rows, field=rec, uncertainty=unsure)
        return FieldDone(
            job.stem, job.path, list(job.files), summary, rows, rec, uncertainty=unsure
        )
    except (ImageError, ValueError, MemoryError, OSError) as exc:
        what = (
            "not enough memory: segment a crop, or a smaller plane"
            if isinstance(exc, MemoryError)
            else f"could not write its masks ({exc.strerror or exc}); check the file name's "
            "length and the free space in --out"
            if isinstance(exc, OSError)
            else str(exc)
        )
        return FieldDone(job.stem, job.path, error=what)


def is_mosaic(job: FieldJob) -> bool:
    """Whether a field is segmented block by block (:mod:`.mosaic`): a TIFF plane or an
    OME-Zarr image of more than :data:`mosaic.MOSAIC_PIXELS` pixels, or any of them when
    the job gives a ``block`` side (``block`` 0: never, the whole plane in memory)."""
    from . import omezarr
    from .images import stored_shape
    from .mosaic import MOSAIC_PIXELS

    path = Path(job.path)
    zarr_image = omezarr.is_image(path)
    if not zarr_image and (path.suffix.lower() not in (".tif", ".tiff") or not path.is_file()):
        return False
    block = job.options.get("block")
    if block is not None:
        return block > 0
    if zarr_image:
        try:
            found = (tuple(omezarr.read_array(path).shape),)
        except (ValueError, OSError, KeyError):
            return False  # reading it as a field will say what is wrong
    else:
        found = stored_shape(path)
    if found is None:
        return False
    plane = [n for n in found[0] if n > 4][-2:]
    return len(plane) == 2 and plane[0] * plane[1] > MOSAIC_PIXELS


def _run_mosaic(job: FieldJob, bundle, progress) -> FieldDone:
    """:func:`run_field` for a whole-well mosaic: block by block, outputs as tiled TIFFs."""
    from .mosaic import BLOCK, lazy_source, segment_mosaic, write_tiled_tif
    from .plate import field_of
    from .scale import choose_zoom

    o = job.options
    if o.get("prob"):
        raise ValueError(
            f"{Path(job.path).name} is a mosaic segmented block by block: its probabilities "
            "are not kept (no --prob); crop it into fields for those"
        )
    source = lazy_source(job.path, o.get("plane"))
    zoom, how = choose_zoom(
        bundle,
        source,  # the estimate reads its central crop only
        diameter=o.get("diameter", "auto"),
        pixel_size=o.get("pixel_size"),
        path=Path(job.path),
        device=o.get("device", "auto"),
    )
    well, index = field_of(Path(job.path))
    import tempfile

    # a new hidden folder in --out (never an existing one), removed when the field ends
    work = Path(tempfile.mkdtemp(prefix=f".{job.stem}.blocks-", dir=job.out))
    try:
        result = segment_mosaic(
            bundle,
            source,
            work,
            zoom=zoom,
            block=int(o.get("block") or BLOCK),
            device=o.get("device", "auto"),
            tile=o.get("tile"),
            overlap=o.get("overlap"),
            batch_size=o.get("batch_size"),
            tta=o.get("tta", 1),
            runtime=o.get("runtime", "auto"),
            table=bool(o.get("table")),
            info={"image": job.stem, "well": well, "field": index},
            progress=progress,
        )
        _write_record(job, done=False)  # from here on these files are this field's own
        if o.get("format") == "ome-zarr":
            _write_mosaic_zarr(job, bundle, source, result)
        else:
            named = {f"{n}.tif": z for n, z in result.masks.items()}
            named.update({f"{n}_instances.tif": z for n, z in result.objects.items()})
            for name, z in named.items():
                write_atomic(
                    _planned(job, f"{job.stem}_{name}"), lambda t, z=z: write_tiled_tif(t, z)
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    h, w = result.shape
    rec = None
    if o.get("table"):
        rec = {
            "well": well or job.stem,
            "pixels": h * w,
            "areas": result.areas,
            "objects": {
                n: [r["area"] for r in result.rows if r["class"] == n] for n in result.objects
            },
        }
    summary = ", ".join(f"{n} {100 * a / (h * w):.1f}%" for n, a in result.areas.items())
    summary += f" ({how}, zoom {zoom:.2f}, {h}x{w} block by block)"
    unsure = round(result.uncertainty, 6)
    _write_record(job, done=True, summary=summary, rows=result.rows, field=rec, uncertainty=unsure)
    return FieldDone(
        job.stem, job.path, list(job.files), summary, result.rows, rec, uncertainty=unsure
    )


def _write_mosaic_zarr(job: FieldJob, bundle, source, result) -> None:
    """A mosaic's image and masks as one OME-Zarr image, streamed from the lazily read
    plane and the blocks' zarr arrays one chunk at a time (one thread: bounded memory)."""
    import dask
    import dask.array as da

    from .mosaic import CHUNK
    from .omezarr import write_field

    cfg = bundle.config
    colours = {c.name: c.colour for c in [*cfg.classes, *cfg.derived]}
    chunks = (CHUNK, CHUNK, *source.shape[2:])
    if isinstance(source, da.Array):  # an OME-Zarr mosaic
        image = source.rechunk(chunks)
    else:
        image = da.from_array(source, chunks)
    masks = {n: da.from_zarr(z) for n, z in result.masks.items()}
    named = {f"{n}_instances": da.from_zarr(z) for n, z in result.objects.items()}
    with dask.config.set(scheduler="synchronous"):
        write_field(_planned(job, f"{job.stem}.ome.zarr"), image, masks, colours, named)


def jobs_for(
    fields: Sequence[tuple[str | Path, str, int | None]], out: str | Path, model: str, options: dict
) -> tuple[list[FieldJob], list[FieldDone], list[str]]:
    """Jobs to segment ``fields`` (``(image, output stem, plane or None)`` each, e.g. a
    plate's :attr:`~.plate.Field.stem` and :meth:`~.plate.Field.channel_plane`) into
    ``out`` with the bundled ``model``.

    Returns the jobs still to run, the fields already done there (their records say so),
    and the images left out because files of theirs exist in ``out`` that no run of ours
    wrote (a user's own masks are never overwritten: give another folder).
    """
    from .bundle_config import safe_name
    from .bundles import load_bundle

    cfg = load_bundle(model).config
    for name in [c.name for c in cfg.classes] + [d.name for d in cfg.derived]:
        safe_name(name, what=f"class name of model {cfg.name!r}")  # outputs stay inside out
    out = Path(out)
    ours = own_outputs(out)
    todo, done, refused = [], [], []
    for path, stem, plane in fields:
        files = output_files(stem, cfg.classes, cfg.derived, prob=bool(options.get("prob")))
        opts = {**options, "plane": plane} if plane is not None else dict(options)
        job = FieldJob(str(path), stem, str(out), files, model, opts)
        if (finished_field := finished(job)) is not None:
            done.append(finished_field)
        elif read_record(out, stem) is None and any(
            (out / f).exists() and f not in ours for f in files
        ):
            refused.append(stem)
        else:
            todo.append(job)
    return todo, done, refused


def segment_fields(jobs: Sequence[FieldJob]) -> Iterator[FieldDone]:
    """The fields of ``jobs`` one after the other in this process, each result as it comes
    (for a worker thread: stopping between fields loses nothing, each field is whole)."""
    for job in jobs:
        done = run_field(job)
        if not done.error:
            record_outputs(job.out, done.files)
        yield done


def table_rows(path: Path, stem: str, masks, objects, gray) -> tuple[list[dict], dict]:
    """One field's object rows and its record for the well table (:mod:`.tables`)."""
    from .plate import field_of
    from .postprocess import instances
    from .tables import object_rows

    well, index = field_of(path)
    everything = {n: objects.get(n) if n in objects else instances(m) for n, m in masks.items()}
    info = {"image": stem, "well": well, "field": index}
    rows = object_rows(everything, gray, counted=list(objects), info=info)
    rec = {
        "well": well or stem,
        "pixels": int(next(iter(masks.values())).size),
        "areas": {n: int(np.count_nonzero(m)) for n, m in masks.items()},
        "objects": {n: [r["area"] for r in rows if r["class"] == n] for n in objects},
    }
    return rows, rec


def run_fields(
    jobs: Sequence[FieldJob],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[FieldDone]:
    """Run ``jobs`` and yield each field's result as it finishes.

    ``workers`` ≤ 1 and no ``scheduler``: one after the other in this process
    (``progress`` sees each field's tiles). Otherwise on dask: a local cluster
    of ``workers`` processes (one thread each; give each job's ``threads`` its
    share of the cores), or the cluster whose scheduler is at ``scheduler``
    (e.g. ``tcp://10.0.0.5:8786``), whose workers must have this package and
    read the images and ``--out`` at the same paths.
    """
    if workers <= 1 and not scheduler:
        for job in jobs:
            yield run_field(job, progress)
        return
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - a dependency
        raise RuntimeError(
            "parallel segmentation needs dask's distributed: pip install 'dask[distributed]'"
        ) from exc
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="30s")
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        )
        client = Client(cluster)
    try:
        futures = [client.submit(run_field, job, pure=False) for job in jobs]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
