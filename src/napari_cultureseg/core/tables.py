"""Tables of what was segmented: one row per object, one row per well.

:func:`object_rows` measures every object of the counted classes (area,
perimeter, equivalent diameter, eccentricity, solidity, mean intensity,
centroid; scikit-image's ``regionprops_table``) and relates it to the objects of
every other class, which may overlap it (classes are independent masks):

``in_<class>``
    The label of the other class's object that holds more than half of this
    object's pixels (a nucleus in its cell, an invasive cell on a vessel), or 0.
``contains_<class>``
    How many of the other class's objects lie more than half inside this one.
``touches_<class>``
    How many others overlap it or share a border with it (4-neighbours)
    without either of the above.

:func:`well_rows` sums the fields of each well: objects per class, objects per
field, each class's area as a percentage of the imaged area (for cells: the
confluence) and mean object area. Areas are in pixels of the image.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

MEASURES = (
    "area",
    "perimeter",
    "equivalent_diameter",
    "eccentricity",
    "solidity",
    "mean_intensity",
    "centroid_y",
    "centroid_x",
)
"""The per-object measurements, in the order of the table's columns."""

_PROPS = {
    "area": "area",
    "perimeter": "perimeter",
    "equivalent_diameter": "equivalent_diameter_area",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "mean_intensity": "intensity_mean",
    "centroid_y": "centroid-0",
    "centroid_x": "centroid-1",
}


def object_rows(
    objects: Mapping[str, np.ndarray],
    intensity: np.ndarray | None = None,
    *,
    counted: Iterable[str] | None = None,
    info: Mapping[str, str] | None = None,
) -> list[dict]:
    """One row per object of each counted class.

    Parameters
    ----------
    objects
        ``{class: (H, W) labels}`` for every class (a class's connected components
        when it is not counted), all of one image's shape.
    intensity
        ``(H, W)`` image for the mean intensity (a gray plane), or None.
    counted
        Classes whose objects get rows (default: all of ``objects``).
    info
        Columns put first in every row, e.g. ``{"image": …, "well": "A01", "field": "1"}``.
    """
    from skimage.measure import regionprops_table

    names = list(objects)
    counted = names if counted is None else [c for c in names if c in set(counted)]
    shapes = {np.shape(a) for a in objects.values()}
    if len(shapes) > 1:
        raise ValueError(f"the classes' label images differ in shape: {sorted(shapes)}")
    if intensity is not None and np.ndim(intensity) != 2:
        raise ValueError("intensity must be one gray plane (H, W) of the labels' shape")
    rows = []
    for name in counted:
        lab = np.asarray(objects[name])
        props = ["label", "area", "perimeter", "equivalent_diameter_area", "eccentricity"]
        props += ["solidity", "centroid"] + (["intensity_mean"] if intensity is not None else [])
        t = regionprops_table(lab, intensity_image=intensity, properties=props)
        relations = {
            other: _relations(lab, np.asarray(objects[other]), t["label"])
            for other in names
            if other != name
        }
        for i, label in enumerate(t["label"]):
            row = dict(info or {})
            row["class"] = name
            row["label"] = int(label)
            for col, prop in _PROPS.items():
                v = t.get(prop)
                row[col] = "" if v is None else _number(v[i])
            for other, (inside, contains, touches) in relations.items():
                row[f"in_{other}"] = int(inside[i])
                row[f"contains_{other}"] = int(contains[i])
                row[f"touches_{other}"] = int(touches[i])
            rows.append(row)
    return rows


def _number(v):
    v = float(v)
    return int(v) if v.is_integer() else round(v, 3)


def _relations(a: np.ndarray, b: np.ndarray, labels: np.ndarray):
    """Per label of ``a`` (in ``labels``' order): the ``b`` object it lies in, how many
    ``b`` objects lie in it, how many touch it otherwise (see the module docstring)."""
    n = len(labels)
    inside, contains, touches = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    if n == 0 or not b.any():
        return inside, contains, touches
    index = {int(k): i for i, k in enumerate(labels)}
    from .postprocess import object_sizes  # banded: np.bincount would copy at 8 B/px

    area_a = object_sizes(a, int(a.max()))
    area_b = object_sizes(b, int(b.max()))
    nb = int(b.max()) + 1
    both = (a > 0) & (b > 0)
    codes, overlap = np.unique(
        a[both].astype(np.int64) * nb + b[both], return_counts=True
    )  # overlapping pairs and their shared pixels
    related = dict(zip(codes.tolist(), overlap.tolist(), strict=True))
    h, w = a.shape
    for dy, dx in ((0, 1), (1, 0)):  # pairs that share a border (4-neighbours), both ways
        for a_part, b_part in (
            (a[: h - dy, : w - dx], b[dy:, dx:]),
            (a[dy:, dx:], b[: h - dy, : w - dx]),
        ):
            m = (a_part > 0) & (b_part > 0)
            for code in np.unique(a_part[m].astype(np.int64) * nb + b_part[m]).tolist():
                related.setdefault(code, 0)
    related = {divmod(code, nb): k for code, k in related.items()}
    for (la, lb), k in related.items():
        i = index.get(la)
        if i is None:
            continue
        if 2 * k > area_a[la]:
            inside[i] = lb  # more than half: one such object at most
        elif 2 * k > area_b[lb]:
            contains[i] += 1
        else:
            touches[i] += 1
    return inside, contains, touches


def well_rows(fields: Sequence[Mapping]) -> list[dict]:
    """One row per well from per-field records.

    Each record: ``well``, ``pixels`` (the field's area), ``areas`` ``{class: px}``
    and ``objects`` ``{class: [object areas]}`` (counted classes only).
    """
    wells: dict[str, list[Mapping]] = {}
    for f in fields:
        wells.setdefault(str(f["well"]), []).append(f)
    classes = sorted({c for f in fields for c in f["areas"]})
    counted = sorted({c for f in fields for c in f.get("objects", {})})
    rows = []
    for well in sorted(wells, key=_well_order):
        fs = wells[well]
        pixels = sum(int(f["pixels"]) for f in fs)
        row = {"well": well, "fields": len(fs)}
        for c in counted:
            sizes = [a for f in fs for a in f.get("objects", {}).get(c, [])]
            row[f"{c}_count"] = len(sizes)
            row[f"{c}_per_field"] = round(len(sizes) / len(fs), 2)
            row[f"{c}_mean_area"] = round(float(np.mean(sizes)), 1) if sizes else ""
        for c in classes:
            area = sum(int(f["areas"].get(c, 0)) for f in fs)
            row[f"{c}_area_pct"] = round(100.0 * area / pixels, 2) if pixels else ""
        rows.append(row)
    return rows


def _well_order(well: str):
    from .plate import PlateError, well_position

    try:
        return (0, well_position(well))
    except PlateError:  # images that are no plate field: after the wells, by name
        return (1, well)


def write_csv(path: str | Path, rows: Sequence[Mapping]) -> None:
    """Write ``rows`` as CSV; the columns are every key, in the order they first appear."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
