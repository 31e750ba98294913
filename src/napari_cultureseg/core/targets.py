"""What a network learns from a mask: class channels, border channels, distance channels.

One function, :func:`targets_from_masks`, turns the masks of one image (binary
or instance labels, one per class) into the ``(target, valid)`` pair of a
training :class:`~.datasets.Sample`, in the output order of
:attr:`bundles.BundleConfig.n_outputs`: the K classes, then a border channel
per ``separate: boundary`` class, then a distance channel per ``separate:
distance`` class. Folders of training data, synthetic data and the user's
workspaces all go through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from .bundles import boundary_channels, distance_channels


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
        Names or :class:`bundles.ClassSpec` in the model's output order; border
        and distance channels exist only for ClassSpecs that ask for them.
    shape
        ``(H, W)`` of the image.
    derived_known
        Whether the border and distance channels of a known class are known
        too. False for masks painted by hand, where touching objects are one
        component and their borders and distances would be wrong.

    Returns
    -------
    target
        ``(n_outputs, H, W)``: uint8 {0, 1}, or float32 when there are distance
        channels (their values lie in [0, 1]).
    valid
        ``(n_outputs, H, W)`` bool.
    """
    names = [c if isinstance(c, str) else c.name for c in classes]
    specs = [] if any(isinstance(c, str) for c in classes) else list(classes)
    borders_of, dist_of = boundary_channels(specs), distance_channels(specs)
    n_out = len(names) + len(borders_of) + len(dist_of)
    h, w = shape
    target = np.zeros((n_out, h, w), np.float32 if dist_of else np.uint8)
    valid = np.zeros((n_out, h, w), bool)
    for k, name in enumerate(names):
        m = masks.get(name)
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != (h, w):
            raise ValueError(f"mask of {name!r} has shape {m.shape}; the image is {(h, w)}")
        target[k], valid[k] = m > 0, True
        if not derived_known:
            continue
        if name in borders_of:
            c = borders_of[name]
            target[c], valid[c] = borders(m), True
        if name in dist_of:
            c = dist_of[name]
            target[c], valid[c] = distances(m), True
    return target, valid
