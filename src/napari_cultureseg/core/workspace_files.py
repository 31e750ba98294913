"""The files of a workspace folder, beneath :class:`~.workspace.Workspace`.

Where workspaces live and what their folders are called (:func:`key_for_path`,
:func:`key_for_array`), the edit journal (``journal.jsonl``), crash-safe writes,
and the list of saved workspaces; the folder layout is described in :mod:`.workspace`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bundles import home_dir

META = "workspace.json"
JOURNAL = "journal.jsonl"
KINDS = ("paint", "erase", "fill", "edit", "accept_view", "segment", "threshold")
"""``edit``: several kinds of hand edit (e.g. paint then erase) saved together."""


Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open: rows y0:y1, columns x0:x1


class WorkspaceError(ValueError):
    """A workspace that cannot be opened or used; the message says what to do."""


@dataclass(frozen=True)
class JournalEntry:
    """One edit: UTC ISO time, class (``"class"`` in the file), kind (one of :data:`KINDS`),
    bounding box of the changed pixels (None if none), pixels changed (for
    ``accept_view``: newly reviewed) and the model that made the mask, if any."""

    time: str
    cls: str
    kind: str
    bbox: Box | None
    changed: int
    model: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "time": self.time,
                "class": self.cls,
                "kind": self.kind,
                "bbox": list(self.bbox) if self.bbox else None,
                "changed": self.changed,
                "model": self.model,
            }
        )

    @classmethod
    def from_dict(cls, d: dict) -> JournalEntry:
        box = tuple(int(v) for v in d["bbox"]) if d["bbox"] else None
        return cls(d["time"], d["class"], d["kind"], box, int(d["changed"]), d.get("model"))


@dataclass(frozen=True)
class WorkspaceSummary:
    """A saved workspace as :func:`list_workspaces` sees it (from ``workspace.json`` only).

    ``reviewed`` counts reviewed pixels per class as of the last save; ``error``
    says why ``workspace.json`` could not be read (the other fields are then empty).
    """

    key: str
    path: Path
    image_name: str = ""
    image_path: str | None = None
    shape: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()
    reviewed: dict[str, int] | None = None
    modified: str = ""
    error: str = ""


def default_root() -> Path:
    """Where workspaces live: ``$CULTURESEG_HOME/workspaces``."""
    return home_dir() / "workspaces"


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p)
    return h.hexdigest()


def key_for_path(path: str | Path) -> str:
    """A 16-hex-digit key from an image file's resolved path, size and mtime.

    An unchanged file always gives the same key; rewriting or touching it gives
    a new key, so a new empty workspace (the old one stays in :func:`list_workspaces`).
    """
    p = Path(path).resolve()
    st = p.stat()
    return _digest(f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode())


def key_for_array(array, *, samples: int = 512) -> str:
    """A 16-hex-digit key for an in-memory image: shape, dtype and a strided subsample.

    At most ``samples`` positions per axis are read, so a 10k×10k image takes
    milliseconds; images differing only between sampled pixels share a key.
    """
    shape = tuple(int(n) for n in array.shape)
    grid = tuple(slice(None, None, max(1, -(-n // samples))) for n in shape)
    sub = np.ascontiguousarray(np.asarray(array[grid]))
    return _digest(repr((shape, str(np.dtype(array.dtype)))).encode(), sub.tobytes())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _class_file(name: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '_', name)[:40]}-{_digest(name.encode())[:6]}.tif"


def read_journal(path: str | Path) -> list[JournalEntry]:
    """The entries of a ``journal.jsonl``. A last line without its newline is a write
    cut short by a kill: it is skipped (and set aside before the next append)."""
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")[:-1]  # after the last newline: unfinished
    except FileNotFoundError:
        return []
    entries = []
    for i, line in enumerate(lines):
        try:
            if line.strip():
                entries.append(JournalEntry.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkspaceError(
                f"{path} line {i + 1} is not a journal entry ({exc}). The masks "
                f"do not depend on it: move {path.name} aside to go on."
            ) from exc
    return entries


def _append_journal(path: Path, entries: list[JournalEntry]) -> None:
    with open(path, "r+b" if path.exists() else "w+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - 65536))
        tail = f.read()
        if tail and not tail.endswith(b"\n"):  # set the unfinished line aside, then append
            fragment = tail[tail.rfind(b"\n") + 1 :]
            with open(path.with_name(path.name + ".partial"), "ab") as g:
                g.write(fragment + b"\n")
            f.truncate(end - len(fragment))
            f.seek(end - len(fragment))
        f.write("".join(e.to_json() + "\n" for e in entries).encode())
        f.flush()
        os.fsync(f.fileno())


def list_workspaces(root: str | Path | None = None) -> list[WorkspaceSummary]:
    """The saved workspaces under ``root``, most recently modified first.

    Reads only each ``workspace.json``; an unreadable one is listed with ``error`` set.
    """
    root = Path(root if root is not None else default_root())
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not (folder / META).is_file():
            continue
        try:
            meta = json.loads((folder / META).read_text())
            image, classes = meta["image"], meta["classes"]
            out.append(
                WorkspaceSummary(
                    folder.name,
                    folder,
                    image["name"],
                    image.get("path"),
                    tuple(image["shape"]),
                    tuple(c["name"] for c in classes),
                    {c["name"]: int(c.get("reviewed_pixels", 0)) for c in classes},
                    meta["modified"],
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            out.append(WorkspaceSummary(folder.name, folder, error=f"{type(exc).__name__}: {exc}"))
    return sorted(out, key=lambda s: s.modified, reverse=True)
