"""Writing without ever leaving half a file: the one atomic writer of the project.

Every file napari-cultureseg writes (masks, tables, records, the user's corrections,
bundles' configs and cards, ONNX exports, manifests) goes through
:func:`write_atomic`: the content is written to a hidden temporary file beside the
target, then renamed onto it, so a crash, a full disk or a killed process leaves the
old file or the new one, never a mixture. Folders (a bundle, an OME-Zarr field) are
replaced with :func:`swap_in`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(path, write: Callable[[Path], object], *, durable: bool = False) -> Path:
    """``write(temporary path)``, then rename the temporary file onto ``path``.

    ``durable``: flush the file to the disk before the rename and the folder after it
    (``fsync``), for what must survive a power cut once saved: the user's corrections.
    The temporary file is removed if anything fails. Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:  # the rename itself lives in the folder: flush that too (POSIX)
        _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # Windows cannot open a folder; its renames are durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def swap_in(tmp: Path, path: Path) -> None:
    """Rename the folder ``tmp`` to ``path``, an existing ``path`` moved aside first and
    deleted only after: at every moment one complete folder is at ``path`` or beside it."""
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
