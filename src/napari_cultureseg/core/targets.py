"""What a network learns from a mask: class, border, distance and flow channels.

One function, :func:`targets_from_masks`, turns the masks of one image (binary
or instance labels, one per class) into the ``(target, valid)`` pair of a
training :class:`~.datasets.Sample`, in the output order of
:attr:`bundle_config.BundleConfig.n_outputs`: the K classes, then a border channel
per ``separate: boundary`` class, then a distance channel per ``separate:
distance`` class, then two flow channels per ``separate: flow`` class.
Folders of training data, synthetic data and the user's workspaces all go
through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from .bundle_config import boundary_channels, distance_channels, flow_channels


def as_labels(mask: np.ndarray) -> np.ndarray:
    """Instance labels of a mask: kept when it holds labels, else its 8-connected components."""
    mask = np.asarray(mask)
    if mask.dtype == bool or mask.max(initial=0) <= 1:
        labels, _ = ndi.label(mask > 0, structure=np.ones((3, 3), bool))
        return labels
    return mask


def borders(labels: np.ndarray) -> np.ndarray:
    """The target of a border channel: object pixels next to another object or the background.

    ``labels`` are instance labels (a binary mask is split into its 8-connected
    components first, so objects that touch in it cannot be told apart).
    Between two touching objects the border is two pixels wide, one from each.
    """
    from skimage.segmentation import find_boundaries

    return find_boundaries(as_labels(labels), mode="inner").astype(np.uint8)


def distances(labels: np.ndarray) -> np.ndarray:
    """The target of a distance channel: each object's distance to its outline, 1 at its centre.

    For every object, the Euclidean distance of its pixels to the nearest pixel
    outside it (background or another object), plus one, divided by the
    object's largest such value: the medial ridge of an object is 1, its
    outline pixels are small but positive, background is 0. Touching objects
    therefore meet in a valley, which is what splits them again
    (:func:`postprocess.instances` with ``method="distance"``), and the values
    are the same for an object at any size.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 in [0, 1].
    """
    from skimage.segmentation import find_boundaries

    labels = as_labels(labels)
    if not labels.any():
        return np.zeros(labels.shape, np.float32)
    inside = (labels > 0) & ~find_boundaries(labels, mode="inner")
    d = ndi.distance_transform_edt(inside).astype(np.float32) + 1.0
    d[labels == 0] = 0.0
    ids, inverse = np.unique(labels, return_inverse=True)
    peak = ndi.maximum(d, labels, ids).astype(np.float32)
    peak[ids == 0] = 1.0
    return (d / peak[inverse.reshape(labels.shape)]).astype(np.float32)


def flows(labels: np.ndarray) -> np.ndarray:
    """The target of the flow channels: at each object pixel, the way to the object's centre.

    As cellpose (Stringer et al. 2021) makes it: heat is released at the
    object's centre (its pixel nearest the median of its pixels) and diffuses
    inside the object only, for twice the object's height plus width steps;
    the flow is the unit vector of the heat's gradient, so following it leads
    every pixel along the object, round its bends, to the same centre, and two
    touching objects flow apart where they meet. Unlike a distance map, a thin
    or long object has one centre, not a ridge that can break.

    Returns
    -------
    numpy.ndarray
        ``(2, H, W)`` float32: row and column components in [-1, 1]; 0 on
        background and at each centre.
    """
    labels = as_labels(labels)
    out = np.zeros((2, *labels.shape), np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        m = np.pad(labels[sl] == i, 1)
        ys, xs = np.nonzero(m)
        if ys.size < 2:
            continue
        j = int(np.argmin((ys - np.median(ys)) ** 2 + (xs - np.median(xs)) ** 2))
        cy, cx = ys[j], xs[j]
        heat = np.zeros(m.shape)
        w = m.astype(np.float64) / 9.0
        for _ in range(2 * (m.shape[0] + m.shape[1])):
            heat[cy, cx] += 1.0
            s = heat[:-2, :-2] + heat[:-2, 1:-1] + heat[:-2, 2:] + heat[1:-1, :-2]
            s += heat[1:-1, 1:-1] + heat[1:-1, 2:] + heat[2:, :-2] + heat[2:, 1:-1] + heat[2:, 2:]
            heat[1:-1, 1:-1] = s * w[1:-1, 1:-1]
        gy = heat[2:, 1:-1] - heat[:-2, 1:-1]
        gx = heat[1:-1, 2:] - heat[1:-1, :-2]
        norm = np.hypot(gy, gx)
        inside = m[1:-1, 1:-1] & (norm > 0)
        for c, g in enumerate((gy, gx)):
            out[c][sl][inside] = (g[inside] / norm[inside]).astype(np.float32)
    return out


LONE_SOLIDITY = 0.9
"""A painted component at least this convex (area / convex hull area) is one object:
two equal discs that just touch have 2π / (π + 4) ≈ 0.88 (set before any measurement)."""


def lone_objects(
    mask: np.ndarray, *, solidity: float = LONE_SOLIDITY
) -> tuple[np.ndarray, np.ndarray]:
    """The components of a painted mask that are one object each, and where that is known.

    A mask painted by hand keeps touching objects as one component, so its
    distance target (:func:`distances`) is unknown there; but a convex
    component (``solidity`` or more) is one object (a nucleus, a rounded cell),
    and its distance target is exact. Fine-tuning then learns the distance map
    of a new experiment from its corrections wherever they say it.

    Returns
    -------
    labels
        ``(H, W)`` int32: the lone components, numbered; 0 elsewhere.
    known
        ``(H, W)`` bool: background and lone components (the distance target is
        right there); False on components that may be several objects.
    """
    from skimage.measure import regionprops

    mask = np.asarray(mask) > 0
    labels, n = ndi.label(mask)
    if not n:
        return labels, np.ones(mask.shape, bool)
    lone = np.zeros(n + 1, bool)
    for r in regionprops(labels):
        lone[r.label] = r.area < 3 or r.solidity >= solidity
    labels[~lone[labels]] = 0
    return labels, ~mask | (labels > 0)


def targets_from_masks(
    masks: Mapping[str, np.ndarray | None],
    classes: Sequence,
    shape: tuple[int, int],
    *,
    derived_known: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(target, valid)`` of one image from its per-class masks.

    Parameters
    ----------
    masks
        ``{class name: mask}``: a binary mask or instance labels of the image's
        shape; a class that is absent (or None) is unknown for this image, not
        background (``valid`` False, its loss ignored).
    classes
        Names or :class:`bundle_config.ClassSpec` in the model's output order; border
        and distance channels exist only for ClassSpecs that ask for them.
    shape
        ``(H, W)`` of the image.
    derived_known
        Whether the border and distance channels of a known class are known
        too. False for masks painted by hand, where touching objects are one
        component: borders are unknown then, and distances known only on
        background and lone objects (:func:`lone_objects`).

    Returns
    -------
    target
        ``(n_outputs, H, W)``: uint8 {0, 1}, or float32 when there are distance
        or flow channels (their values lie in [0, 1]).
    valid
        ``(n_outputs, H, W)`` bool.
    """
    names = [c if isinstance(c, str) else c.name for c in classes]
    specs = [] if any(isinstance(c, str) for c in classes) else list(classes)
    borders_of, dist_of = boundary_channels(specs), distance_channels(specs)
    flow_of = flow_channels(specs)
    n_out = len(names) + len(borders_of) + len(dist_of) + 2 * len(flow_of)
    h, w = shape
    target = np.zeros((n_out, h, w), np.float32 if dist_of or flow_of else np.uint8)
    valid = np.zeros((n_out, h, w), bool)
    for cy, cx in flow_of.values():  # no direction: 0.5 (flows are stored as (v + 1) / 2)
        target[[cy, cx]] = 0.5
    for k, name in enumerate(names):
        m = masks.get(name)
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != (h, w):
            raise ValueError(f"mask of {name!r} has shape {m.shape}; the image is {(h, w)}")
        target[k], valid[k] = m > 0, True
        if not derived_known:  # painted: a border is unknown, a distance where objects are lone
            if name in dist_of:
                lone, known = lone_objects(m)
                c = dist_of[name]
                target[c], valid[c] = distances(lone), known
            if name in flow_of:
                lone, known = lone_objects(m)
                pair = list(flow_of[name])
                target[pair], valid[pair] = (flows(lone) + 1.0) / 2.0, known
            continue
        if name in borders_of:
            c = borders_of[name]
            target[c], valid[c] = borders(m), True
        if name in dist_of:
            c = dist_of[name]
            target[c], valid[c] = distances(m), True
        if name in flow_of:
            pair = list(flow_of[name])
            target[pair], valid[pair] = (flows(m) + 1.0) / 2.0, True
    return target, valid
