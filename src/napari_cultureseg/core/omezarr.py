"""Masks as OME-Zarr label images beside their image (NGFF 0.4, via ``ome-zarr``).

One field becomes one OME-Zarr image folder, ``<stem>.ome.zarr``: the image itself
(a resolution pyramid, so viewers open a whole well quickly) and under
``labels/`` one label image per class, named after the class, with the class
colour in its ``image-label`` metadata (napari-ome-zarr, QuPath and Fiji's
MoBIE show them coloured), plus ``<class>_instances`` for counted classes
(object labels 1..N). The folder is written under a temporary name and moved
into place, so a reader never sees half a field.

``ome-zarr`` (and ``zarr``) are optional: ``pip install "napari-cultureseg[ome-zarr]"``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .atomic import swap_in

SUFFIX = ".ome.zarr"


def need() -> None:
    """Refuse early (with what to install) when ``ome-zarr`` is missing."""
    try:
        import ome_zarr  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            'OME-Zarr output needs the ome-zarr package: pip install "napari-cultureseg[ome-zarr]"'
            " (or write TIFFs: --format tif)"
        ) from exc


def rgba(colour: str) -> list[int]:
    """``#rrggbb`` as ``[r, g, b, 255]``."""
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {colour!r} is not #rrggbb")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)] + [255]


def _levels(shape) -> list[int]:
    """Pyramid factors down to about 256 px on the shorter side (none for small fields)."""
    factors, f = [], 2
    while min(shape[:2]) // f >= 256 and len(factors) < 5:
        factors.append(f)
        f *= 2
    return factors


def _is_dask(a) -> bool:
    return type(a).__module__.startswith("dask.")


def write_field(
    path: str | Path,
    image: np.ndarray,
    masks: Mapping[str, np.ndarray],
    colours: Mapping[str, str],
    instances: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write ``image`` (``(H, W)`` or ``(H, W, 3|4)``) and its class ``masks`` (0/1, each
    coloured by ``colours``) and object label images ``instances`` (by their label image's
    name, e.g. ``cell_instances``) as an OME-Zarr image at ``path``; returns ``path``.

    Each may be a dask array (a whole-well mosaic's, read from disk chunk by chunk): it is
    then written, pyramid included, one chunk at a time and never held whole.

    Raises
    ------
    ValueError
        ``ome-zarr`` is not installed, or a mask does not have the image's shape.
    """
    need()
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image, write_labels

    fmt = FormatV04()  # NGFF 0.4 (zarr v2): what most viewers read today
    path = Path(path)
    shape = image.shape[:2]
    for name, m in {**masks, **(instances or {})}.items():
        if m.shape != shape:
            raise ValueError(f"mask {name!r} is {m.shape}, the image {shape}")
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    factors = _levels(shape)
    if image.ndim == 3:  # NGFF puts the channel axis before y and x
        write_image(np.moveaxis(image, -1, 0), root, axes="cyx", scale_factors=factors, fmt=fmt)
    else:
        write_image(image, root, axes="yx", scale_factors=factors, fmt=fmt)
    coloured = {
        name: {
            "colors": [{"label-value": 1, "rgba": rgba(colours.get(name, "#ff4040"))}],
            "properties": [{"label-value": 1, "class": name}],
        }
        for name in masks
    }
    for name, labels in [*masks.items(), *(instances or {}).items()]:
        dtype = np.uint8 if name in coloured else np.uint32
        write_labels(
            labels.astype(dtype) if _is_dask(labels) else np.asarray(labels, dtype=dtype),
            root,
            name=name,
            axes="yx",
            scaler=None,
            scale_factors=factors,
            fmt=fmt,
            label_metadata=coloured.get(name),
        )
    swap_in(tmp, path)  # a field written again: its old folder goes only now
    return path


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """The full-resolution label images of an OME-Zarr image, by name."""
    need()
    import zarr

    path = Path(path)
    names = _attrs(path / "labels").get("labels", []) if (path / "labels").is_dir() else []
    out = {}
    for name in names:
        group = path / "labels" / name
        level0 = _attrs(group)["multiscales"][0]["datasets"][0]["path"]
        out[name] = np.asarray(zarr.open_array(str(group / level0), mode="r"))
    return out


# ------------------------------------------------------------------ reading


def _attrs(path: Path) -> dict:
    """The NGFF attributes of a zarr group folder (zarr v2 ``.zattrs`` or v3 ``zarr.json``)."""
    import json

    try:
        if (path / ".zattrs").is_file():
            return json.loads((path / ".zattrs").read_text())
        if (path / "zarr.json").is_file():
            a = json.loads((path / "zarr.json").read_text()).get("attributes", {})
            return a.get("ome", a)
    except (OSError, ValueError):
        pass
    return {}


def is_image(path: str | Path) -> bool:
    """Whether ``path`` is an OME-Zarr image (a folder with ``multiscales``)."""
    p = Path(path)
    return p.is_dir() and "multiscales" in _attrs(p)


def is_plate(path: str | Path) -> bool:
    """Whether ``path`` is an OME-Zarr HCS plate (a folder with ``plate`` metadata)."""
    p = Path(path)
    return p.is_dir() and "plate" in _attrs(p)


def read_array(path: str | Path):
    """The full-resolution level of an OME-Zarr image, lazily (a dask array), with its
    time and z axes dropped when they hold one plane and the channel axis first:
    ``(y, x)``, ``(c, y, x)`` or a stack. Only the plane used is ever read."""
    need()
    import dask.array as da
    import zarr

    p = Path(path)
    ms = _attrs(p)["multiscales"][0]
    axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    arr = da.from_zarr(zarr.open_array(str(p / ms["datasets"][0]["path"]), mode="r"))
    if not axes:  # NGFF 0.1-0.3: always t, c, z, y, x
        axes = list("tczyx"[-arr.ndim :])
    for name in ("t", "z"):
        if name in axes and arr.shape[axes.index(name)] == 1:
            arr = arr.squeeze(axis=axes.index(name))
            axes.remove(name)
    if "c" in axes and arr.shape[axes.index("c")] == 1:
        arr = arr.squeeze(axis=axes.index("c"))
        axes.remove("c")
    if "c" in axes:
        arr = da.moveaxis(arr, axes.index("c"), 0)
    return arr


def channel_names(path: str | Path) -> list[str]:
    """An OME-Zarr image's channel names (``omero`` labels, else ``c0``, ``c1``…)."""
    p = Path(path)
    a = _attrs(p)
    labels = [c.get("label") or "" for c in (a.get("omero") or {}).get("channels", [])]
    ms = a["multiscales"][0]
    axes = [x["name"] if isinstance(x, dict) else x for x in ms.get("axes", [])]
    if "c" not in axes:
        return [labels[0] if labels else ""]
    import zarr

    n = zarr.open_array(str(p / ms["datasets"][0]["path"]), mode="r").shape[axes.index("c")]
    if n == 1:
        return [labels[0] if labels else ""]
    if len(labels) != n or len(set(labels)) != n or not all(labels):
        labels = [f"c{i}" for i in range(n)]
    return labels


def plate_fields(path: str | Path) -> list[tuple[str, int, str, int, Path]]:
    """``(well, field, channel, plane, image)`` of every field of an HCS plate: the row and
    column names of its ``plate`` metadata as a well name, the field's 1-based number in
    its well, and each channel with its index in the image."""
    root = Path(path)
    plate = _attrs(root)["plate"]
    rows = [r["name"] for r in plate.get("rows", [])]
    cols = [c["name"] for c in plate.get("columns", [])]
    out = []
    for well in plate.get("wells", []):
        if "rowIndex" in well:
            row, col = rows[well["rowIndex"]], cols[well["columnIndex"]]
        else:
            row, col = well["path"].split("/")
        images = _attrs(root / well["path"]).get("well", {}).get("images", [])
        for i, image in enumerate(images):
            folder = root / well["path"] / image["path"]
            if not is_image(folder):
                continue
            for plane, channel in enumerate(channel_names(folder)):
                out.append((f"{row}{col}", i + 1, channel, plane, folder))
    return out
