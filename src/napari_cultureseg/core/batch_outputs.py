"""What a batch of fields (:mod:`.batch`) leaves in ``--out``, and how it is written.

A :class:`FieldJob` per field and its :class:`FieldDone`; each field's *record*
(``.cultureseg-fields/<stem>.json``, see :mod:`.batch` for why a killed run can be
resumed), the names of its output files, the output manifest that keeps a tool's
own outputs from being read as inputs again, the ``objects.csv`` / ``wells.csv``
tables, and atomic writes (a temporary file renamed into place).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import write_atomic

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
    """:meth:`segmentation.Segmentation.uncertainty` of the field (ranks what to correct next)."""


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
