"""Inputs and outputs of ``cultureseg segment``: which files of a folder are images,
the fields of OME-Zarr plates, one output stem per image, and where outputs may be written."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.images import SUFFIXES


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
    from ..core.omezarr import is_image

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
            from ..core.batch_outputs import own_outputs

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
    from ..core.omezarr import is_plate

    try:
        return is_plate(arg)
    except OSError:
        return False


def _ome_zarr_fields(args: list[str], channel: str | None) -> dict[Path, tuple[str, int]]:
    """The fields of the OME-Zarr HCS plates among ``args``: ``{image folder: (output stem,
    plane of ``channel``)}``, the stem the field's key (``A01_f1``)."""
    from ..core.plate import discover_plate

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
