"""npe2 writers: the class Labels layers of an image saved as the CLI saves them.

:func:`write_ome_zarr`: the image and its class layers as one OME-Zarr image
(``.ome.zarr``), every layer a label image named after its class and coloured
like it (``cultureseg segment --format ome-zarr`` writes the same).

:func:`write_labels`: one zlib TIFF per layer: ``<name>.tif`` for a single layer,
``<stem>_<layer>.tif`` beside the chosen file for several (as ``cultureseg segment`` names
``<image>_<class>.tif``), masks as 0/1 uint8 and objects as labels, with the
class name and colour in the TIFF's description. It never overwrites a file
napari did not ask about: when a second file exists it refuses, naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np


class WriteError(RuntimeError):
    """Why layers were not saved (napari turns a ValueError from a writer into "not a
    valid writer" and drops the message, so this is not a ValueError)."""


def _safe(name: str) -> str:
    """A layer name as a file-name part: ``cell · objects`` → ``cell_objects``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "labels"


def write_labels(path: str, layer_data: list[tuple]) -> list[str]:
    """Write Labels layers (napari's ``(data, meta, layer_type)`` tuples); returns the paths."""
    import tifffile

    from .core.atomic import write_atomic

    target = Path(path)
    if target.suffix.lower() not in (".tif", ".tiff"):
        target = target.with_name(target.name + ".tif")
    layers = [(np.asarray(d), m) for d, m, kind in layer_data if kind == "labels"]
    if not layers:
        raise WriteError("no Labels layer to save: select the class layers first")
    if len(layers) == 1:
        paths = [target]
    else:
        names = [_safe(_class_of(m) or f"labels{i}") for i, (_, m) in enumerate(layers)]
        if len(set(names)) < len(names):
            raise WriteError(f"two selected layers would share a file name ({names}); rename one")
        paths = [target.with_name(f"{target.stem}_{n}{target.suffix}") for n in names]
        existing = [p.name for p in paths if p.exists()]
        if existing:
            raise WriteError(
                f"{', '.join(existing)} exist(s) already in {target.parent}; nothing was "
                "written. Choose another file name"
            )
    for p, (data, meta) in zip(paths, layers, strict=True):
        if data.ndim > 3 or data.dtype.kind not in "uib":
            raise WriteError(f"layer {meta.get('name')!r}: {data.shape} {data.dtype} is not labels")
        top = int(data.max(initial=0))
        dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
        if int(data.min(initial=0)) < 0:
            raise WriteError(f"layer {meta.get('name')!r} has negative labels")
        ours = (meta.get("metadata") or {}).get("cultureseg") or {}
        desc = {
            "class": _class_of(meta),
            "colour": str(ours.get("colour", "")),
            "written_by": "napari-cultureseg",
        }
        text = json.dumps(desc)
        write_atomic(  # a save that fails leaves the file that was there
            p,
            lambda tmp, d=data, t=dtype, s=text: tifffile.imwrite(
                tmp, d.astype(t, copy=False), compression="zlib", description=s, metadata=None
            ),
        )
    return [str(p) for p in paths]


def _class_of(meta: dict) -> str:
    """The class a layer shows (the Segment widget's layers say it), else the layer's name."""
    ours = (meta.get("metadata") or {}).get("cultureseg") or {}
    if ours.get("class"):
        return str(ours["class"])
    name = str(meta.get("name") or "")
    return name.split(" · ", 1)[1] if " · " in name else name  # "<image> · cell · objects"


def write_ome_zarr(path: str, layer_data: list[tuple]) -> list[str]:
    """Write one Image layer and its Labels layers as an OME-Zarr image; returns the path."""
    from .core.omezarr import write_field

    target = Path(path)
    if not target.name.endswith(".zarr"):
        target = target.with_name(target.name + ".ome.zarr")
    images = [(np.asarray(d), m) for d, m, kind in layer_data if kind == "image"]
    layers = [(np.asarray(d), m) for d, m, kind in layer_data if kind == "labels"]
    if len(images) != 1 or not layers:
        raise WriteError(
            "select one image and its class layers (Labels) to save them as OME-Zarr; "
            f"selected: {len(images)} image(s), {len(layers)} Labels layer(s)"
        )
    if target.exists():
        raise WriteError(f"{target} exists already; nothing was written. Choose another name")
    image, _ = images[0]
    masks, colours, others = {}, {}, {}
    for data, meta in layers:
        name = _safe(_class_of(meta))
        if name in masks or name in others:
            raise WriteError(f"two selected layers are both {name!r}; rename one")
        if data.shape != image.shape[: data.ndim] or data.ndim != 2:
            raise WriteError(
                f"layer {meta.get('name')!r} is {data.shape}, the image {image.shape[:2]}: "
                "select the image the class layers belong to"
            )
        if data.dtype.kind not in "uib" or int(data.min(initial=0)) < 0:
            raise WriteError(f"layer {meta.get('name')!r} is not labels")
        if int(data.max(initial=0)) <= 1:
            masks[name] = data.astype(np.uint8, copy=False)
            ours = (meta.get("metadata") or {}).get("cultureseg") or {}
            colours[name] = str(ours.get("colour") or "#ff4040")
        else:
            others[name] = data
    try:
        write_field(target, image, masks, colours, others)
    except ValueError as exc:
        raise WriteError(str(exc)) from exc
    return [str(target)]
