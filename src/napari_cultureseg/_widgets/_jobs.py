"""One way to run a core generator in a worker thread, for every dock widget.

superqt treats a ``RuntimeError`` escaping a worker as "the worker was
deleted" and never emits ``finished``; torch reports out-of-memory and most
failures as ``RuntimeError``, which would leave a widget busy for good (its
Start button disabled, no message). :func:`guarded` re-raises those as
:class:`JobFailed`, and :func:`start_job` wires the handlers at creation
(without an ``errored`` handler there, napari re-raises worker errors into
the Qt event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Generator


class JobFailed(Exception):
    """An error inside a worker, re-raised as a non-RuntimeError (see the module docstring)."""


def guarded(job: Callable[..., Generator], *args, **kwargs) -> Generator:
    """Run the generator ``job(*args, **kwargs)``, passing on what is sent to it (e.g.
    ``"stop"``); a RuntimeError inside becomes :class:`JobFailed`."""
    gen = job(*args, **kwargs)
    value = None
    try:
        while True:
            value = yield gen.send(value)
    except StopIteration as stop:
        return stop.value
    except RuntimeError as exc:
        raise JobFailed(f"{type(exc).__name__}: {exc}") from exc


def start_job(
    job: Callable[..., Generator],
    *args,
    yielded=None,
    returned=None,
    errored=None,
    finished=None,
    **kwargs,
):
    """Start ``job`` in a napari worker thread with its handlers; returns the worker."""
    from napari.qt.threading import create_worker

    connect = {
        k: v
        for k, v in (
            ("yielded", yielded),
            ("returned", returned),
            ("errored", errored),
            ("finished", finished),
        )
        if v is not None
    }
    worker = create_worker(guarded, job, *args, **kwargs, _start_thread=False, _connect=connect)
    worker.start()
    return worker


TTA_CHOICES = [("off", 1), ("2 flips", 2), ("4 flips", 4), ("8 flips and turns", 8)]
"""The test-time augmentation choices of the Segment and Plate docks (copies averaged)."""


def collapsible(title: str, widgets, *, expanded: bool = False):
    """A magicgui Container of ``widgets`` inside a collapsible section (superqt).

    Returns ``(container, section)``: keep the container to read the values, add
    ``section`` (a QWidget) to the dock's layout. Collapsed, the settings most
    users never change leave the room to the controls they use, so both docks fit
    a 1920×1080 screen.
    """
    from magicgui.widgets import Container
    from superqt import QCollapsible

    box = Container(widgets=list(widgets), labels=True)
    box.margins = (0, 0, 0, 0)
    section = QCollapsible(title)
    section.addWidget(box.native)
    if expanded:
        section.expand(animate=False)
    else:
        section.collapse(animate=False)
    return box, section
