"""Plates: the fields of a multiwell plate, found in a folder by their file names.

A plate is wells (``A01`` … ``P24``, and ``AA01``-style rows of 1536-well
plates) × fields × channels. :func:`discover_plate` reads a folder's file names
with one of the layouts that microscopes write, or with a user's pattern:

``well_field``
    ``A01_s1.tif``, ``A01_s1_w2.tif`` (field ``s``, optional channel ``w``).
``imagexpress``
    Molecular Devices MetaXpress / ImageXpress: ``<plate>_A01_s1_w1.tif``,
    the channel optionally followed by a GUID (``…_w1A1B2C3D4-….tif``);
    thumbnails (``_thumb``) are skipped.
``operetta``
    PerkinElmer Operetta / Harmony: ``r01c01f01p01-ch1sk1fk1fl1.tiff``
    (row, column, field, plane, channel, time point).
``ome-zarr``
    An OME-Zarr HCS plate (``plate.zarr/A/1/0``, NGFF ``plate`` and ``well``
    metadata): found by its metadata, not its file names.
a pattern
    ``"{well}_{field}.tif"``, ``"{plate}_{row}{col}_f{field}_{channel}.png"``:
    fields ``{well}``, ``{row}`` (letters or a number), ``{col}``, ``{field}``,
    ``{channel}``, ``{plane}``, ``{time}`` and ``{any}`` (ignored text). A
    pattern needs a well (``{well}``, or ``{row}`` and ``{col}``).

``auto`` tries the named layouts and keeps the one that reads the most files;
it refuses, naming the files, when none reads any. Nothing here touches Qt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .images import SUFFIXES

LAYOUTS = ("well_field", "imagexpress", "operetta")
"""The file-name layouts :func:`discover_plate` knows by name."""

_WELL = r"(?P<row>[A-Za-z]{1,2})(?P<col>\d{1,3})"
_REGEX = {
    "well_field": re.compile("^" + _WELL + r"_s(?P<field>\d+)(?:_w(?P<channel>\d+))?$"),
    "imagexpress": re.compile(
        r"^(?P<plate>.+?)_"
        + _WELL
        + r"(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+)(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f-]{27})?)?$"
    ),
    "operetta": re.compile(
        r"^r(?P<row>\d{2})c(?P<col>\d{2})f(?P<field>\d{2})p(?P<plane>\d{2})"
        r"-ch(?P<channel>\d+)sk(?P<time>\d+)fk\d+fl\d+$"
    ),
}
_PLACEHOLDERS = {
    "well": _WELL,
    "row": r"(?P<row>[A-Za-z]{1,2}|\d{1,3})",
    "col": r"(?P<col>\d{1,3})",
    "field": r"(?P<field>\d+)",
    "channel": r"(?P<channel>[A-Za-z0-9-]+?)",
    "plane": r"(?P<plane>\d+)",
    "time": r"(?P<time>\d+)",
    "plate": r"(?P<plate>.+?)",
    "any": r".*?",
}


class PlateError(ValueError):
    """A folder or pattern that does not describe a plate; the message says what to do."""


@dataclass(frozen=True)
class Field:
    """One field of view of a well: its image file per channel."""

    well: str
    """``A01``-style: row letters, then the column with two digits at least."""
    index: int
    """The field's number as the file names give it (1-based on most microscopes)."""
    channels: dict[str, Path]
    """``{channel: file}``; one entry ``""`` when the files name no channel."""
    plane: int = 0
    """The focal plane, when the plate's files hold more than one (else 0)."""
    time: int = 0
    """The time point, when the plate's files hold more than one (else 0)."""
    planes: dict[str, int] = field(default_factory=dict)
    """OME-Zarr plates: ``{channel: index}`` of each channel in the field's image
    (``channels`` then maps every channel to the same image folder)."""

    @property
    def stem(self) -> str:
        """The name of the field's outputs (``<stem>_<class>.tif``): its image file's
        stem, or for an OME-Zarr plate (whose images are folders named 0, 1, …) its key."""
        return self.key if self.planes else self.path().stem

    def channel_plane(self, channel: str | None = None) -> int | None:
        """The plane to read from :meth:`path` for ``channel``: its index in an OME-Zarr
        field's image, None for a file that holds one channel."""
        if not self.planes:
            return None
        return self.planes[channel if channel is not None else sorted(self.channels)[0]]

    @property
    def key(self) -> str:
        """A name unique within the plate, for outputs and workspaces: ``A01_f1``."""
        extra = (f"_p{self.plane}" if self.plane else "") + (f"_t{self.time}" if self.time else "")
        return f"{self.well}_f{self.index}{extra}"

    def path(self, channel: str | None = None) -> Path:
        """The file of ``channel`` (default: the first channel in sorted order)."""
        if channel is None:
            return self.channels[sorted(self.channels)[0]]
        if channel not in self.channels:
            raise PlateError(
                f"field {self.key} has no channel {channel!r}; it has "
                f"{', '.join(repr(c) for c in sorted(self.channels))}"
            )
        return self.channels[channel]


@dataclass
class Plate:
    """The fields of one plate, and what in its folder was not read as one."""

    root: Path
    layout: str
    fields: list[Field]
    ignored: list[Path] = field(default_factory=list)
    """Image files whose names the layout did not read (reported, never segmented)."""

    @property
    def wells(self) -> list[str]:
        """Wells with at least one field, in plate order (A01, A02, …, B01, …)."""
        return sorted({f.well for f in self.fields}, key=well_position)

    @property
    def channels(self) -> list[str]:
        """Every channel named by any field, sorted."""
        return sorted({c for f in self.fields for c in f.channels})

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the smallest standard plate (6 … 1536 wells) holding the wells."""
        rows = max((well_position(w)[0] for w in self.wells), default=0) + 1
        cols = max((well_position(w)[1] for w in self.wells), default=0) + 1
        for shape in ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48)):
            if rows <= shape[0] and cols <= shape[1]:
                return shape
        return rows, cols

    def fields_of(self, well: str) -> list[Field]:
        """The fields of ``well`` (``A1`` or ``A01``), by number."""
        w = normalise_well(well)
        return [f for f in self.fields if f.well == w]

    def files(self, channel: str | None = None) -> list[Path]:
        """One image file per field, of ``channel`` (see :meth:`Field.path`), in plate order."""
        return [f.path(channel) for f in self.fields]


def well_position(well: str) -> tuple[int, int]:
    """``(row, column)`` 0-based of a well name: ``A01`` → (0, 0), ``P24`` → (15, 23),
    ``AB03`` → (27, 2) (1536-well rows A…Z, AA…AF)."""
    m = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,3})", well)
    if not m:
        raise PlateError(f"{well!r} is not a well name like A01")
    letters, col = m.group(1).upper(), int(m.group(2))
    row = (
        ord(letters[-1])
        - ord("A")
        + (26 * (ord(letters[0]) - ord("A") + 1) if len(letters) == 2 else 0)
    )
    return row, col - 1


def normalise_well(
    well: str | None = None, *, row: str | None = None, col: str | None = None
) -> str:
    """``A01``-style name from ``a1``, ``A001`` or a row and column (the row a letter or a
    1-based number, as Operetta's ``r02c05`` → ``B05``)."""
    if well is not None:
        m = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,3})", well)
        if not m:
            raise PlateError(f"{well!r} is not a well name like A01")
        row, col = m.group(1), m.group(2)
    if row is None or col is None:
        raise PlateError("a well needs a row and a column")
    if row.isdigit():
        r = int(row)
        if not 1 <= r <= 32:
            raise PlateError(f"row {row} is outside a plate (1-32)")
        row = chr(ord("A") + r - 1) if r <= 26 else "A" + chr(ord("A") + r - 27)
    elif len(row) == 2 and not ("AA" <= row.upper() <= "AF"):
        raise PlateError(f"row {row} is outside a plate (A-Z, AA-AF)")
    c = int(col)
    if not 1 <= c <= 48:
        raise PlateError(f"column {col} is outside a plate (1-48)")
    return f"{row.upper()}{c:02d}"


def pattern_regex(pattern: str) -> re.Pattern:
    """The regular expression of a user's pattern (see the module docstring)."""
    names = re.findall(r"{(\w+)}", pattern)
    unknown = sorted(set(names) - set(_PLACEHOLDERS))
    if unknown:
        raise PlateError(
            f"pattern {pattern!r}: unknown field(s) {', '.join(unknown)}; "
            f"use {', '.join('{' + k + '}' for k in _PLACEHOLDERS)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1 and n != "any"})
    if repeated:
        raise PlateError(f"pattern {pattern!r}: {', '.join(repeated)} appear(s) twice")
    if "well" in names and {"row", "col"} & set(names):
        raise PlateError(f"pattern {pattern!r}: give {{well}} or {{row}} and {{col}}, not both")
    if "well" not in names and not {"row", "col"} <= set(names):
        raise PlateError(f"pattern {pattern!r} names no well: use {{well}}, or {{row}} and {{col}}")
    parts = re.split(r"({\w+})", pattern)
    regex = "".join(
        _PLACEHOLDERS[p[1:-1]] if re.fullmatch(r"{\w+}", p) else re.escape(p) for p in parts
    )
    if not pattern.lower().endswith(SUFFIXES):  # no extension given: any image file's
        regex += r"(?:\.ome)?(?:" + "|".join(re.escape(x) for x in SUFFIXES) + ")"
    return re.compile(f"^{regex}$", re.IGNORECASE)


def discover_plate(
    folder: str | Path, layout: str = "auto", *, files: Iterable[str | Path] | None = None
) -> Plate:
    """The plate whose image files are in ``folder`` (not its subfolders).

    Parameters
    ----------
    layout
        ``auto``, one of :data:`LAYOUTS`, or a pattern with ``{well}``-style fields.
    files
        The file names to read instead of listing ``folder`` (paths relative to it).

    Raises
    ------
    PlateError
        No file is read as a field, or two files claim the same field and channel.
    """
    root = Path(folder)
    from . import omezarr

    if files is None and omezarr.is_plate(root):
        return _ome_zarr_plate(root)
    if files is None:
        if not root.is_dir():
            raise PlateError(
                f"{root} is not a folder: give the folder that holds the plate's images"
            )
        files = [p for p in sorted(root.iterdir()) if p.is_file()]
    paths = [root / p if not Path(p).is_absolute() else Path(p) for p in files]
    images = [p for p in paths if p.suffix.lower() in SUFFIXES and "_thumb" not in p.name.lower()]
    if not images:
        raise PlateError(f"{root}: no image files ({', '.join(sorted(SUFFIXES))})")
    if layout == "auto":
        best = max(
            LAYOUTS, key=lambda name: sum(_read(_REGEX[name], p) is not None for p in images)
        )
        if not any(_read(_REGEX[best], p) for p in images):
            raise PlateError(
                f"{root}: no file name reads as a plate field (e.g. {images[0].name}); "
                f"name the layout ({', '.join(LAYOUTS)}) or give a pattern such as "
                '"{well}_{field}.tif"'
            )
        layout, regex = best, _REGEX[best]
    elif layout in _REGEX:
        regex = _REGEX[layout]
    elif "{" in layout:
        regex = pattern_regex(layout)
    else:
        raise PlateError(
            f"unknown plate layout {layout!r}: use auto, {', '.join(LAYOUTS)} or a pattern "
            'such as "{well}_{field}.tif"'
        )
    groups: dict[tuple, dict[str, Path]] = {}
    ignored = []
    whole_name = layout not in _REGEX  # a user's pattern reads the name with its extension
    for p in images:
        got = _read(regex, p, whole_name)
        if got is None:
            ignored.append(p)
            continue
        well, index, channel, plane, time = got
        channels = groups.setdefault((well, index, plane, time), {})
        if channel in channels:
            raise PlateError(
                f"{channels[channel].name} and {p.name} are both well {well}, field {index}"
                + (f", channel {channel}" if channel else "")
                + ": give a pattern that tells them apart"
            )
        channels[channel] = p
    if not groups:
        raise PlateError(
            f"{root}: no file name reads with {layout!r} (e.g. {images[0].name}); "
            "check the pattern against a file name"
        )
    # a plane or time point that is the same in every file is no dimension of the plate
    one_plane = len({k[2] for k in groups}) == 1
    one_time = len({k[3] for k in groups}) == 1
    fields = [
        Field(
            well, index, dict(sorted(ch.items())), 0 if one_plane else plane, 0 if one_time else t
        )
        for (well, index, plane, t), ch in groups.items()
    ]
    fields.sort(key=lambda f: (well_position(f.well), f.index, f.plane, f.time))
    return Plate(root, layout, fields, ignored)


def _ome_zarr_plate(root: Path) -> Plate:
    """The fields of an OME-Zarr HCS plate, from its ``plate`` and ``well`` metadata."""
    from . import omezarr

    try:
        found = omezarr.plate_fields(root)
    except (KeyError, IndexError, ValueError, OSError) as exc:
        raise PlateError(f"{root}: its OME-Zarr plate metadata cannot be read ({exc})") from exc
    groups: dict[tuple, tuple[dict, dict]] = {}
    for well, index, channel, plane, image in found:
        try:
            name = normalise_well(well)
        except PlateError:
            continue
        channels, planes = groups.setdefault((name, index), ({}, {}))
        channels[channel], planes[channel] = image, plane
    if not groups:
        raise PlateError(f"{root}: an OME-Zarr plate without readable fields")
    fields = [Field(w, i, ch, planes=pl) for (w, i), (ch, pl) in groups.items()]
    fields.sort(key=lambda f: (well_position(f.well), f.index))
    return Plate(root, "ome-zarr", fields)


def field_of(path: str | Path) -> tuple[str, str]:
    """``(well, field)`` of one file by the named layouts (``("A01", "2")``), or ``("", "")``."""
    for name in LAYOUTS:
        got = _read(_REGEX[name], Path(path))
        if got is not None:
            return got[0], str(got[1])
    return "", ""


def _read(regex: re.Pattern, path: Path, whole_name: bool = False):
    """``(well, field, channel, plane, time)`` of a file name, or None."""
    stem = path.name
    if not whole_name:
        ome = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
        stem = path.name[: -len("".join(path.suffixes[-2:]))] if ome else path.stem
    m = regex.match(stem)
    if not m:
        return None
    g = m.groupdict()
    try:
        well = normalise_well(row=g["row"], col=g["col"])
    except PlateError:
        return None
    return (
        well,
        int(g.get("field") or 1),
        g.get("channel") or "",
        int(g.get("plane") or 0),
        int(g.get("time") or 0),
    )
