"""Saving a :class:`~.workspace.Workspace` every so often while the user edits,
driven by the caller's timer (no thread)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .workspace import Workspace


class Autosaver:
    """Saves a workspace at most every ``interval`` seconds; the caller drives it (no thread).

    Call :meth:`touch` after a change (edits through the workspace count by
    themselves) and :meth:`maybe_save` from a GUI-thread timer. Guarantee: when
    ``maybe_save`` runs every ``period`` seconds, a change made at time t is on
    disk by ``t + interval + period`` plus one save's duration — with the default
    1 s and a 500 ms timer, within about 1.5 s. A first change after a quiet
    spell is saved at the next tick. Call :meth:`flush` when the image is closed.

    Parameters
    ----------
    workspace
        What to save.
    interval
        Least number of seconds between two saves.
    before_save
        Called just before each save, e.g. to hand layer data to
        :meth:`Workspace.apply_edit` once per save rather than on every stroke.
    clock
        Where ``now`` comes from when not given (monotonic seconds).
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        interval: float = 1.0,
        before_save: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.workspace, self.interval = workspace, float(interval)
        self.before_save, self._clock = before_save, clock
        self._touched, self._last = False, -math.inf

    def touch(self) -> None:
        """Note that something changed."""
        self._touched = True

    @property
    def pending(self) -> bool:
        return self._touched or self.workspace.dirty

    def maybe_save(self, now: float | None = None) -> bool:
        """Save if something changed and ``interval`` seconds passed since the last save."""
        now = self._clock() if now is None else now
        if not self.pending or now - self._last < self.interval:
            return False
        return self.flush(now)

    def flush(self, now: float | None = None) -> bool:
        """Save now if something changed, whatever the interval; returns whether it saved.

        A failing save raises and is retried after ``interval``, not on every tick.
        """
        if not self.pending:
            return False
        self._last = self._clock() if now is None else now
        if self.before_save is not None:
            self.before_save()
        self.workspace.save()
        self._touched = False
        return True
