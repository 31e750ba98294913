"""What part of an image the user sees: the one visible-box helper of the docks."""

from __future__ import annotations

import numpy as np


def visible_box(layer, shape, margin: int = 0) -> tuple[int, int, int, int]:
    """The part of ``layer`` on screen, in pixels ``(y0, x0, y1, x1)``, grown by ``margin``
    on every side and clipped to ``shape`` (the plane's ``H, W``)."""
    corners = np.asarray(layer.corner_pixels)[:, -2:]
    h, w = shape[:2]
    y0, x0 = np.clip(corners[0] - margin, 0, [h, w])
    y1, x1 = np.clip(corners[1] + 1 + margin, 0, [h, w])
    return int(y0), int(x0), int(y1), int(x1)
