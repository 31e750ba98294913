"""Workspaces: where one image's corrections live on disk, saved as the user works.

::

    $CULTURESEG_HOME/workspaces/<key>/      key: key_for_path(file) or key_for_array(pixels)
    ├── workspace.json    format, image (name, path, shape), classes (name, colour, file,
    │                     reviewed pixels), models used, created / modified
    ├── cell-3f9a1c.tif   per class: page 0 = mask, page 1 = reviewed; 1-bit, zlib
    └── journal.jsonl     append-only, one JSON line per edit

Crash safety: every file is written to a temporary file in its folder, fsync'ed
and moved into place with ``os.replace``, so each is always a whole old or a whole
new version. A save writes the dirty class files, then appends the journal
(flush + fsync), then ``workspace.json``. A journal line cut short by a kill is
skipped on read and set aside (``journal.jsonl.partial``) before the next append.
Nothing here deletes a user's file; an unreadable workspace raises
:class:`WorkspaceError` saying what to do. Not thread-safe: use a workspace from
one thread (the GUI's); :meth:`Workspace.samples` returns copies for a worker.

Storage was chosen by measurement (4096×4096 mask + reviewed, fsync included):
1-bit zlib TIFF 36 ms / 220 kB, uint8 zlib TIFF 80 ms / 305 kB,
``np.savez_compressed`` 208 ms / 326 kB.

The files beneath a workspace (keys, journal, crash-safe writes, the list of saved
workspaces) are in :mod:`.workspace_files`; :class:`Autosaver` in :mod:`.autosave`.
This module is over 400 lines because :class:`Workspace` is one object (masks,
reviewed masks, journal and save share its state) of about 375 lines.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from .atomic import write_atomic
from .bundle_config import distance_channels, flow_channels
from .datasets import Sample, experiment_of
from .workspace_files import (
    JOURNAL,
    KINDS,
    META,
    Box,
    JournalEntry,
    WorkspaceError,
    _append_journal,
    _class_file,
    _now,
    default_root,
    read_journal,
)

FORMAT = "cultureseg-workspace/1"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _bbox(changed: np.ndarray) -> Box | None:
    rows = np.flatnonzero(changed.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(changed[rows[0] : rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class Workspace:
    """The corrections of one image: per class a mask and a reviewed mask, and a journal.

    Open with :meth:`open`; change masks only through :meth:`set_mask`,
    :meth:`apply_edit` and :meth:`accept_region`. :attr:`masks` and
    :attr:`reviewed` give read-only views (copy one to hand it to a layer).

    Examples
    --------
    >>> ws = Workspace.open(key_for_path("a.tif"), image_name="a.tif", shape=(512, 512),
    ...                     classes=[("cell", "#39ff14")])                   # doctest: +SKIP
    >>> ws.set_mask("cell", probs[0] > 0.5, kind="segment", model="phase-cells")  # doctest: +SKIP
    >>> ws.apply_edit("cell", layer.data, kind="paint")  # -> (y0, x0, y1, x1)   # doctest: +SKIP
    >>> ws.save()                                                                # doctest: +SKIP
    """

    def __init__(self, folder: Path, meta: dict, masks: dict, reviewed: dict):
        self.folder, self.key = folder, folder.name
        self.image_name: str = meta["image"]["name"]
        self.image_path: str | None = meta["image"].get("path")
        self.shape: tuple[int, int] = tuple(int(n) for n in meta["image"]["shape"])
        self.colours: dict[str, str] = {c["name"]: str(c["colour"]) for c in meta["classes"]}
        self.created: str = meta.get("created", "")
        self.modified: str = meta.get("modified", "")
        self.models: list[dict] = [dict(m) for m in meta.get("models", [])]
        """Models used (``model``, ``first_used``, ``last_used``), in order of first use."""
        self._masks, self._reviewed = masks, reviewed
        self._counts = {n: int(np.count_nonzero(r)) for n, r in reviewed.items()}
        self._dirty: set[str] = set()  # classes whose file is behind
        self._unsaved: set[str] = set()  # classes added since the last save
        self._pending: list[JournalEntry] = []
        self._meta_dirty = False

    @classmethod
    def open(
        cls,
        key: str,
        *,
        root: str | Path | None = None,
        image_name: str | None = None,
        image_path: str | Path | None = None,
        shape: tuple[int, int] | None = None,
        classes: Iterable = (),
    ) -> Workspace:
        """Restore workspace ``key``, or create it (in memory: it reaches disk with its first edit).

        Parameters
        ----------
        key
            From :func:`key_for_path` or :func:`key_for_array` (letters, digits, ``._-``).
        root
            The folder of workspaces; default :func:`default_root`.
        image_name, image_path
            Shown in listings; updated if they changed.
        shape
            ``(H, W)`` of the image: needed to create, checked when restoring.
        classes
            ``(name, colour)`` pairs or names. New classes are added empty and
            unreviewed; classes the workspace has but not listed here are kept.

        Raises
        ------
        WorkspaceError
            A file is unreadable or the shape differs; nothing on disk is changed.
        """
        if not _KEY.match(str(key)):
            raise WorkspaceError(
                f"workspace key {key!r} is not a plain folder name; "
                "use key_for_path(...) or key_for_array(...)"
            )
        folder = Path(root if root is not None else default_root()) / key
        image_path = str(image_path) if image_path is not None else None
        new = not (folder / META).is_file()
        if not new:
            ws = cls._load(folder)
            if shape is not None and tuple(shape) != ws.shape:
                raise WorkspaceError(
                    f"workspace {folder} belongs to an image of shape {ws.shape}, but this image "
                    f"is {tuple(shape)}. Open it with another key, or move {folder} away to "
                    "start afresh (its corrections stay there)."
                )
            for attr, value in (("image_name", image_name), ("image_path", image_path)):
                if value is not None and value != getattr(ws, attr):
                    setattr(ws, attr, value)
                    ws._meta_dirty = True
        elif folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
            raise WorkspaceError(
                f"{folder} holds files but no {META}; move it away "
                "(nothing was changed) and open the image again"
            )
        elif shape is None or len(shape) != 2 or min(shape) < 1:
            raise WorkspaceError(
                f"there is no workspace {key!r} yet; to create one give "
                f"shape=(H, W) of the image, got {shape!r}"
            )
        else:
            now = _now()
            meta = {
                "image": {"name": image_name or key, "path": image_path, "shape": shape},
                "classes": [],
                "created": now,
                "modified": now,
            }
            ws = cls(folder, meta, {}, {})
        for c in classes:
            name, colour = (c, "#ff4040") if isinstance(c, str) else (str(c[0]), str(c[1]))
            ws._add_class(name, colour)
        ws._meta_dirty = ws._meta_dirty and not new  # opening alone writes nothing
        return ws

    @classmethod
    def _load(cls, folder: Path) -> Workspace:
        advice = f"Nothing was changed; restore the file from a backup or move {folder} away."
        try:
            meta = json.loads((folder / META).read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            shape = tuple(int(n) for n in meta["image"]["shape"])
            files = {c["name"]: Path(c["file"]).name for c in meta["classes"]}  # no ../
            workspace = cls(folder, meta, {}, {})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkspaceError(
                f"{folder / META} is not a valid workspace file ({exc}). {advice}"
            ) from exc
        for name, file in files.items():
            path = folder / file
            try:
                data = tifffile.imread(path)
            except Exception as exc:  # tifffile and its codecs raise many kinds
                raise WorkspaceError(
                    f"{path} (class {name!r}) cannot be read: {type(exc).__name__}: {exc}. {advice}"
                ) from exc
            if data.shape != (2, *shape):
                raise WorkspaceError(
                    f"{path} holds an array of shape {data.shape}, expected "
                    f"{(2, *shape)} (mask and reviewed of the image). {advice}"
                )
            workspace._masks[name] = (data[0] != 0).view(np.uint8)
            workspace._reviewed[name] = data[1] != 0
            workspace._counts[name] = int(np.count_nonzero(data[1]))
        return workspace

    def _add_class(self, name: str, colour: str) -> None:
        if not name:
            raise WorkspaceError("a class needs a non-empty name")
        if name not in self.colours:
            self._masks[name] = np.zeros(self.shape, np.uint8)
            self._reviewed[name] = np.zeros(self.shape, bool)
            self._counts[name] = 0
            self._unsaved.add(name)
        elif self.colours[name] == colour:
            return
        self.colours[name] = colour
        self._meta_dirty = True

    # ------------------------------------------------------------- state
    @property
    def class_names(self) -> list[str]:
        return list(self.colours)

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Current mask per class: ``(H, W)`` uint8 in {0, 1}, read-only views."""
        return {n: _read_only(a) for n, a in self._masks.items()}

    @property
    def reviewed(self) -> dict[str, np.ndarray]:
        """Where each class was reviewed: ``(H, W)`` bool, read-only views."""
        return {n: _read_only(a) for n, a in self._reviewed.items()}

    @property
    def dirty(self) -> bool:
        """Whether anything changed since the last save."""
        return bool(self._dirty or self._pending or self._meta_dirty)

    def journal(self) -> list[JournalEntry]:
        """All edits, saved or not yet, oldest first."""
        return read_journal(self.folder / JOURNAL) + self._pending

    # ------------------------------------------------------------- edits
    def _need(self, cls: str) -> None:
        if cls not in self._masks:
            raise WorkspaceError(
                f"no class {cls!r} in this workspace; it has {self.class_names}."
                " Add it with Workspace.open(key, classes=[...])"
            )

    def _check(self, cls: str, mask, kind: str) -> np.ndarray:
        self._need(cls)
        if kind not in KINDS:
            raise WorkspaceError(f"kind must be one of {KINDS}, got {kind!r}")
        a = np.asarray(mask)
        if a.shape != self.shape:
            raise WorkspaceError(f"mask for {cls!r} has shape {a.shape}; the image is {self.shape}")
        return a if a.dtype == bool else a != 0

    def _record(self, cls: str, kind: str, box: Box | None, changed: int, model=None) -> None:
        self._pending.append(JournalEntry(_now(), cls, kind, box, changed, model))
        self._dirty.add(cls)

    def set_mask(self, cls: str, mask, *, kind: str, model: str | Path | None = None) -> Box | None:
        """Replace the whole mask of ``cls`` (after Segment, or a new threshold).

        Non-zero is foreground. Reviewed regions stay as they are. One journal
        line is written even if no pixel changed. Returns the changed pixels' box or None.
        """
        new = self._check(cls, mask, kind)
        changed = new != self._masks[cls].view(bool)
        self._masks[cls][...] = new
        if model is not None:
            self.record_model(model)
        box = _bbox(changed)
        self._record(cls, kind, box, int(np.count_nonzero(changed)), model and str(model))
        return box

    def apply_edit(self, cls: str, new_mask, *, kind: str, margin: int = 8) -> Box | None:
        """Take a hand-edited mask of ``cls``; mark what was edited, and around it, reviewed.

        Pixels that differ from the stored mask are copied in; every pixel within
        a **square** of side ``2 * margin + 1`` centred on a changed pixel
        (Chebyshev distance ≤ ``margin``, clipped to the image) becomes reviewed.
        A square, not a disc: two 1-D maximum filters, fast even after a fill of
        the whole image. ``margin=0`` marks the changed pixels only.

        Returns
        -------
        (y0, x0, y1, x1) or None
            Half-open box of the changed pixels; None, and no journal line, if none changed.
        """
        new = self._check(cls, new_mask, kind)
        old = self._masks[cls]
        changed = new != old.view(bool)
        box = _bbox(changed)
        if box is None:
            return None
        y0, x0, y1, x1 = box
        old[y0:y1, x0:x1] = new[y0:y1, x0:x1]
        m, (h, w) = max(0, int(margin)), self.shape
        ys, xs = slice(max(0, y0 - m), min(h, y1 + m)), slice(max(0, x0 - m), min(w, x1 + m))
        grown = changed[ys, xs].view(np.uint8)
        for axis in (0, 1) if m else ():  # the crop reaches m past every change: 0-padding is exact
            grown = ndimage.maximum_filter1d(grown, 2 * m + 1, axis=axis, mode="constant")
        self._reviewed[cls][ys, xs] |= grown.view(bool)
        self._record(cls, kind, box, int(np.count_nonzero(changed[y0:y1, x0:x1])))
        return box

    def accept_region(self, cls: str | None, box) -> int:
        """Mark ``box = (y0, x0, y1, x1)`` reviewed for ``cls`` (None: every class).

        The "accept this view" action. Float corners (a canvas extent) are
        rounded outward and clipped to the image. Returns pixels newly reviewed.
        """
        h, w = self.shape
        y0, x0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
        y1, x1 = min(h, math.ceil(box[2])), min(w, math.ceil(box[3]))
        if y1 <= y0 or x1 <= x0:
            return 0
        total = 0
        for name in self.class_names if cls is None else [cls]:
            self._need(name)
            region = self._reviewed[name][y0:y1, x0:x1]
            newly = region.size - int(np.count_nonzero(region))
            region[...] = True
            self._record(name, "accept_view", (y0, x0, y1, x1), newly)
            total += newly
        return total

    def record_model(self, name_or_path: str | Path) -> None:
        """Note that a model (bundle name or folder) was used on this image, and when."""
        model, now = str(name_or_path), _now()
        for m in self.models:
            if m["model"] == model:
                m["last_used"] = now
                break
        else:
            self.models.append({"model": model, "first_used": now, "last_used": now})
        self._meta_dirty = True

    # ------------------------------------------------------------- saving
    def save(self, force: bool = False) -> bool:
        """Write what changed: dirty class files, then journal lines, then ``workspace.json``.

        Returns False at once, touching no file, if nothing changed (and not
        ``force``). If it raises, what was not written stays dirty for the next save.
        """
        first = not (self.folder / META).is_file()
        if not (force or first or self.dirty):
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in self.class_names:
            if force or first or name in self._dirty or name in self._unsaved:
                pages = np.stack([self._masks[name].view(bool), self._reviewed[name]])
                desc = json.dumps({"class": name, "pages": ["mask", "reviewed"]})
                write_atomic(
                    self.folder / _class_file(name),
                    lambda f, p=pages, d=desc: tifffile.imwrite(
                        f,
                        p,
                        photometric="minisblack",
                        compression="zlib",
                        compressionargs={"level": 6},
                        description=d,
                        metadata=None,
                    ),
                    durable=True,
                )
                self._counts[name] = int(np.count_nonzero(pages[1]))
                self._dirty.discard(name)
                self._unsaved.discard(name)
        if self._pending:
            _append_journal(self.folder / JOURNAL, self._pending)
            self._pending = []
        self.modified = _now()
        image = {"name": self.image_name, "path": self.image_path, "shape": list(self.shape)}
        meta = {
            "format": FORMAT,
            "key": self.key,
            "image": image,
            "classes": [
                {"name": n, "colour": c, "file": _class_file(n), "reviewed_pixels": self._counts[n]}
                for n, c in self.colours.items()
            ],
            "models": self.models,
            "created": self.created,
            "modified": self.modified,
        }
        text = json.dumps(meta, indent=2) + "\n"
        write_atomic(self.folder / META, lambda f: f.write_text(text), durable=True)
        if os.name == "posix":  # make the renames themselves durable
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._meta_dirty = False
        return True

    # ------------------------------------------------------------- training
    def samples(self, image_input: np.ndarray, *, classes: Iterable | None = None) -> Sample:
        """A training :class:`~.datasets.Sample` of this image: target = masks, valid = reviewed.

        Parameters
        ----------
        image_input
            ``(C, H, W)`` or ``(H, W)`` model input, e.g. from :func:`model_input.to_model_input`.
        classes
            Names (or ClassSpecs) in the model's output order; default the
            workspace's. A class the workspace lacks is unknown (valid all False).
        """
        from .targets import targets_from_masks

        img = np.asarray(image_input, dtype=np.float32)
        img = img[None] if img.ndim == 2 else img
        if img.ndim != 3 or img.shape[1:] != self.shape:
            raise WorkspaceError(
                f"image input has shape {img.shape}; expected (C, *{self.shape}) "
                "from images.to_model_input of this workspace's image"
            )
        names = self.class_names if classes is None else [getattr(c, "name", c) for c in classes]
        # The workspace keeps one binary mask per class, where touching objects are one:
        # border channels of ``boundary`` classes stay unknown (valid False); distance and
        # flow channels are known on background and on the components that are one object
        # each (targets.lone_objects), where reviewed.
        specs = [c for c in classes or () if not isinstance(c, str)]
        masks = {n: self._masks[n] for n in names if n in self._masks}
        target, valid = targets_from_masks(
            masks, specs if specs else names, self.shape, derived_known=False
        )
        owner = dict(enumerate(names))
        owner.update({c: n for n, c in distance_channels(specs).items()})
        owner.update({c: n for n, pair in flow_channels(specs).items() for c in pair})
        for c, name in owner.items():
            if name in masks:
                valid[c] &= self._reviewed[name]
        return Sample(self.image_name, img, target, valid, experiment_of(self.image_name))
