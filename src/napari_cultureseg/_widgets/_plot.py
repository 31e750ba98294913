"""A small live line plot for the dock (loss and validation curves).

Painted with QPainter: no plotting library is needed for a few hundred
points, and it redraws in well under a millisecond, so it can follow every
training batch without slowing the GUI.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LinePlot(QWidget):
    """Named series of (x, y) points, each in its own colour, on shared axes.

    ``log_y`` plots the first series (the loss) on a log scale; other series
    with values in [0, 1] (Dice) are drawn against a right-hand 0…1 axis.
    """

    def __init__(self, title: str = "", parent=None):
        super().__init__(parent)
        self.title = title
        self.series: dict[str, tuple[str, list[float], list[float], bool]] = {}
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def add_series(self, name: str, colour: str, *, unit_range: bool = False) -> None:
        """Declare a series; ``unit_range`` ones use the fixed 0…1 right axis."""
        self.series[name] = (colour, [], [], unit_range)

    def append(self, name: str, x: float, y: float) -> None:
        if name in self.series and math.isfinite(y):
            self.series[name][1].append(float(x))
            self.series[name][2].append(float(y))
            self.update()

    def clear(self) -> None:
        for _, xs, ys, _ in self.series.values():
            xs.clear()
            ys.clear()
        self.update()

    def last(self, name: str) -> float | None:
        ys = self.series.get(name, (None, [], [], False))[2]
        return ys[-1] if ys else None

    def paintEvent(self, event):  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 40, 34, 18, 18
        plot = QRectF(left, top, max(1, w - left - right), max(1, h - top - bottom))
        p.fillRect(self.rect(), QColor("#262930"))
        p.setPen(QPen(QColor("#5a5f69")))
        p.drawRect(plot)
        p.setPen(QColor("#d0d4dc"))
        p.drawText(QPointF(left, 13), self.title)
        xs_all = [x for _, xs, _, _ in self.series.values() for x in xs]
        free = [y for _, _, ys, unit in self.series.values() if not unit for y in ys if y > 0]
        if not xs_all:
            p.drawText(plot, Qt.AlignCenter, "no data yet")
            p.end()
            return
        x0, x1 = min(xs_all), max(max(xs_all), min(xs_all) + 1)
        lo, hi = (min(free), max(free)) if free else (1e-3, 1.0)
        lo, hi = math.log10(lo), math.log10(max(hi, lo * 1.01))

        def px(x):
            return plot.left() + (x - x0) / (x1 - x0) * plot.width()

        def py(y, unit):
            if unit:
                f = min(max(y, 0.0), 1.0)
            else:
                f = (math.log10(max(y, 1e-12)) - lo) / (hi - lo) if hi > lo else 0.5
            return plot.bottom() - f * plot.height()

        p.drawText(QPointF(2, plot.top() + 10), f"{10**hi:.2g}")
        p.drawText(QPointF(2, plot.bottom()), f"{10**lo:.2g}")
        p.drawText(QPointF(plot.right() + 3, plot.top() + 10), "1")
        p.drawText(QPointF(plot.right() + 3, plot.bottom()), "0")
        p.drawText(QPointF(plot.right() - 60, h - 3), f"step {int(x1)}")
        legend_x = left + 8
        for name, (colour, xs, ys, unit) in self.series.items():
            pen = QPen(QColor(colour))
            pen.setWidthF(1.6)
            p.setPen(pen)
            if len(xs) > 1:
                points = [QPointF(px(x), py(y, unit)) for x, y in zip(xs, ys, strict=True)]
                p.drawPolyline(QPolygonF(points))
            elif xs:
                p.drawEllipse(QPointF(px(xs[0]), py(ys[0], unit)), 2, 2)
            label = f"{name} {ys[-1]:.3g}" if ys else name
            p.drawText(QPointF(legend_x, plot.top() + 14), label)
            legend_x += 9 * len(label) + 10
        p.end()
