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

The jobs and results themselves (:class:`FieldJob`, :class:`FieldDone`) and
everything a field leaves in ``--out`` (records, output names, the manifest,
tables, atomic writes) are in :mod:`.batch_outputs`; this module runs them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .batch_outputs import (
    FieldDone,
    FieldJob,
    _planned,
    _write_record,
    finished,
    output_files,
    own_outputs,
    read_record,
    record_outputs,
    write_tif,
)


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
            tta=o.get("tta"),  # None: the model's own
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
        result = result.with_seeds(o.get("seeds") or {})  # --splitting
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
            tta=o.get("tta"),  # None: the model's own
            runtime=o.get("runtime", "auto"),
            table=bool(o.get("table")),
            info={"image": job.stem, "well": well, "field": index},
            progress=progress,
            seeds=o.get("seeds"),
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
