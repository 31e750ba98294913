"""Objects from a flow field: every pixel follows the predicted way to its object's centre.

The representation of cellpose (Stringer et al. 2021): the network predicts, at
each pixel of an object, the direction towards the object's centre along the
object (:func:`targets.flows` makes the training target); pixels that end in
the same place are one object. :func:`postprocess.instances` with
``method="flow"`` uses :func:`flow_labels`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def follow_flow(flow: np.ndarray, ys: np.ndarray, xs: np.ndarray, steps: int) -> np.ndarray:
    """Where the pixels ``(ys, xs)`` end after ``steps`` steps along ``flow`` (bilinear).

    ``flow`` is ``(2, H, W)``, row and column components; positions stay inside
    the image. Returns ``(N, 2)`` float32 rows and columns. Torch's
    ``grid_sample`` does the interpolation of all pixels at once.
    """
    import torch
    import torch.nn.functional as F

    h, w = flow.shape[1:]
    f = torch.from_numpy(np.ascontiguousarray(flow, np.float32))[None]
    p = torch.from_numpy(np.stack([ys, xs], 1).astype(np.float32))
    to_grid = torch.tensor([2.0 / max(h - 1, 1), 2.0 / max(w - 1, 1)])
    hi = torch.tensor([h - 1.0, w - 1.0])
    with torch.inference_mode():
        for _ in range(steps):
            g = (p * to_grid - 1.0).flip(1)[None, None]  # grid_sample wants (x, y)
            d = F.grid_sample(f, g, mode="bilinear", align_corners=True)[0, :, 0].T
            p = torch.minimum(torch.clamp(p + d, min=0.0), hi)
    return p.numpy()


def flow_labels(mask: np.ndarray, flow: np.ndarray, steps: int, min_size: int) -> np.ndarray:
    """Objects of ``mask`` from where its pixels' flows end; 0 where a part of the mask
    reached no centre and touches no object (:func:`postprocess.instances` makes
    those objects of their own).

    ``flow`` is the network's two flow channels as it gives them, ``(v + 1) / 2``.
    A centre is a place where pixels gathered (3x3 sums of more than 2) that at
    least ``min_size`` (and 5) pixels reached; smaller gatherings are given away:
    each pixel belongs to the centre it reached, and a pixel that reached none to
    the object it touches (a watershed on a flat image from the labelled pixels).
    """
    from skimage.segmentation import watershed

    ys, xs = np.nonzero(mask)
    if not ys.size:
        return np.zeros(mask.shape, np.int32)
    flow = (2.0 * np.asarray(flow, np.float32) - 1.0) * mask  # nothing leads out of the mask
    end = np.rint(follow_flow(flow, ys, xs, steps)).astype(np.int64)
    h, w = mask.shape
    at = end[:, 0] * w + end[:, 1]
    hits = np.bincount(at, minlength=h * w).reshape(h, w)
    near = ndi.uniform_filter(hits.astype(np.float32), 3, mode="constant") * 9.0
    centres, n = ndi.label(near > 2.5, structure=np.ones((3, 3), bool))
    if n:
        reached = np.bincount(centres.ravel(), hits.ravel(), minlength=n + 1)
        keep = reached >= max(min_size, 5)
        keep[0] = False
        centres = np.where(keep[centres], centres, 0)
    labels = np.zeros(mask.shape, np.int32)
    labels[ys, xs] = centres.ravel()[at]
    if labels.any():  # pixels that reached no centre: to the object they touch
        labels = watershed(np.zeros(mask.shape, np.uint8), labels, mask=mask)
    return labels
