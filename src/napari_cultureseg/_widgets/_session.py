"""One session per viewer: the open images' workspaces, their autosave, flush on quit.

Both docks use the same :class:`Session` (``session_for(viewer)``), so the
Fine-tune dock learns from corrections whether the Segment dock is open or not,
and a workspace is saved once, by one timer, whichever dock changed it. Every
workspace is flushed when a dock closes and when the application quits; the
session ends when the last dock of its viewer closes.
"""

from __future__ import annotations

from ._corrections import Corrections, workspace_key

_SESSIONS: dict = {}
"""Sessions by viewer; a session ends (and leaves) when the last dock using it closes."""


def flush_all(corrections: dict) -> None:
    """Save every workspace now (on closing the window or quitting napari)."""
    for corr in list(corrections.values()):
        try:
            corr.flush()
        except Exception as exc:  # a closing viewer may have lost its layers already
            print(f"napari-cultureseg: could not save corrections of {corr.image_name}: {exc}")


class Session:
    """The workspaces of the images open in one viewer (see the module docstring)."""

    def __init__(self, viewer):
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication

        self.viewer = viewer
        self.corrections: dict[str, Corrections] = {}
        self.errors: list[str] = []
        """Autosave failures not yet shown (a dock shows and clears them)."""
        self._timer = QTimer()  # kept by the session: it goes when the viewer goes
        self._timer.setInterval(500)
        self._timer.timeout.connect(self.autosave)
        self._timer.start()
        corrections = self.corrections  # not `self`: flushing must not keep the session alive
        QApplication.instance().aboutToQuit.connect(lambda: flush_all(corrections))
        self._docks = 0
        self._attached_once = False
        self.listeners: list = []
        """Called after corrections were saved (a dock showing what it would learn from)."""
        self.splitting: dict[str, dict[str, float]] = {}
        """The Segment dock's *splitting* per model, where the user moved it from the
        model's own (``{model: {class: level}}``): the Plate dock segments with it."""

    def attach(self, dock) -> None:
        """A dock uses this session: when the last one closes, everything is saved and the
        session ends (its timer stops, the viewer's images are let go)."""
        self._docks += 1
        self._attached_once = True
        dock.native.destroyed.connect(lambda *_: self._detach())

    def _detach(self) -> None:
        self._docks -= 1
        self.flush()
        if self._docks <= 0:
            try:
                self._timer.stop()
            except RuntimeError:  # Qt deleted it already (application shutting down)
                pass
            for key, session in list(_SESSIONS.items()):
                if session is self:
                    del _SESSIONS[key]

    def corrections_for(self, layer, plane, index, classes=()) -> Corrections:
        """The workspace of a plane of ``layer`` (opened once, then reused)."""
        key = workspace_key(layer, plane, index)
        if key not in self.corrections:
            self.corrections[key] = Corrections(self.viewer, layer, plane, index, classes)
        else:
            self.corrections[key].ensure_classes(classes)
        return self.corrections[key]

    def open(self) -> list[Corrections]:
        """The workspaces whose image is still open in the viewer."""
        return [c for c in self.corrections.values() if c.image_name in self.viewer.layers]

    def autosave(self) -> None:
        """Timer tick: save workspaces with changes (at most once a second each)."""
        if self._docks <= 0 and self._attached_once:
            return
        saved = False
        for corr in list(self.corrections.values()):
            try:
                saved = bool(corr.tick()) or saved
            except Exception as exc:
                self.errors.append(f"could not save corrections of {corr.image_name}: {exc}")
        if saved:
            self.notify()

    def notify(self) -> None:
        """Tell the docks that the saved corrections changed."""
        for listener in list(self.listeners):
            try:
                listener()
            except RuntimeError:  # its dock was closed and Qt deleted its widgets
                self.listeners.remove(listener)

    def flush(self) -> None:
        flush_all(self.corrections)


def session_for(viewer) -> Session:
    """The viewer's session, made on first use.

    napari hands each dock the viewer behind its own proxy object (wrapt's
    ``ObjectProxy``); the session belongs to the viewer behind them, so that
    every dock of a window shares one.
    """
    key = getattr(viewer, "__wrapped__", viewer)
    if key not in _SESSIONS:
        _SESSIONS[key] = Session(viewer)
    return _SESSIONS[key]
