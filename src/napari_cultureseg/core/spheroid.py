"""Sadanandan et al.'s multiscale deep adversarial network for bright-field spheroids.

Kecheril Sadanandan, Karlsson & Wählby (2017) segment one spheroid per image:
inputs downsampled to 480², a segmentation network with two deep feature paths
(1/8 and 1/16 resolution), an adversarial network judging (image, mask) pairs,
weighted labels, an adversarial weight λ rising linearly during training, and a
fixed post-processing (threshold 120/255, fill holes, drop < 64 px, largest
component). The paper's Fig. 2 (the exact layout) is not in our copy of the text;
what it leaves open is marked *guess* below::

    x ─ DConv 60 ─ DConv 120 ─ DConv 240 ─┬─ DeepPath1 (9 × IR1) ───────────────┐ 1/8
       1/2 │       1/4 │           1/8    └─ DConv 480 ─ DeepPath2 (9 × IR2) ─┐  │
           │           │                       1/16                       Up ─┴─ cat
           │           └───────────────────────────────────── cat ─ Up ──┘ 1/4
           └──────────────────────────────────────── cat ─ Up ─┘ 1/2
    x ─────────────────────────────────────── cat ─ Up ─┘ 1/1 ─ 1×1 ─ logits

``DConv``: 3×3 convolution, dilation 2, stride 2, BN, ReLU; channels start at
``base`` = 60 and double at each downsampling (paper). ``Up``: 2×2 transposed
convolution, stride 2 (paper), then concatenation with the encoder map of the
same size (long skip, *guess*: the paper names long skips but not where) and a
3×3 convolution, BN, ReLU. DeepPath2 branches off the encoder at 1/8 rather
than following DeepPath1 (*guess*: "two different deep paths for the two
scales ... to prevent the extraction of redundant features").

In the engine (``configs/spheroid-multiscale.yaml``) the pieces below map to
bundle and training settings: :func:`downsample_input` to ``InputSpec.resize_to``
(``segment`` resizes the whole image and maps the probabilities back),
:func:`spheroid_mask` to the class's threshold, ``fill_holes``, ``min_size`` and
``largest_only``, :func:`weighted_labels` to ``TrainConfig.class_weighting`` with
``fg_weight_factor`` 3, and :func:`adversarial_losses` to ``TrainConfig.adversarial``
(:mod:`.adversarial`).

The network itself is :class:`napari_cultureseg.core.nets.spheroid.SpheroidNet`
(``spheroid-multiscale`` in the registry). torch is imported inside the functions,
so importing this module is cheap.
"""

from __future__ import annotations

import numpy as np

from .adversarial import LAMBDA_END, LAMBDA_START

THRESHOLD_8BIT = 120  # probabilities stored as 8-bit, thresholded at 120 (section 2.5)
MIN_SIZE = 64  # pixels at the network's 480² resolution
INPUT_SIZE = 480


def adversarial_losses(disc, image, logits, target, weights, lam):
    """Sadanandan et al.'s losses (eqs. 2 and 3) for one batch.

    Returns ``(segmentation_loss, discriminator_loss)``: the weighted
    cross-entropy of the logits plus ``lam`` × BCE(disc(image, s(image)), real);
    and BCE(disc(image, target), real) + BCE(disc(image, s(image)), fake), the
    segmentation detached so that the discriminator's step does not train the
    segmenter. Train the two alternately with separate optimisers (paper:
    Adam, lr 1e-4 and 1e-3, betas (0.5, 0.99), batch 1). The engine's training
    loop does this with :class:`adversarial.Adversary` and its masked loss.
    """
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    from .adversarial import discriminator_loss, generator_term

    prob = torch.sigmoid(logits)
    seg = (bce(logits, target, reduction="none") * weights).sum() / weights.sum()
    seg = seg + lam * generator_term(disc, image, prob)
    return seg, discriminator_loss(disc, image, target, prob.detach())


# ---------------------------------------------------------------- training aids


def weighted_labels(mask: np.ndarray, *, fg_factor: float = 3.0) -> np.ndarray:
    """Per-pixel loss weights of Sadanandan et al. 2017 (eq. 1, then the foreground × 3).

    ``W_bg = 1`` and ``W_fg = fg_factor · N_bg / N_fg``, so foreground and
    background contribute equally before the extra factor. Counted over the
    last two axes, i.e. per image for a ``(..., H, W)`` stack. An image with
    no foreground, or no background, gets weight 1 everywhere (nothing to
    balance).

    Examples
    --------
    >>> weighted_labels(np.array([[1, 0, 0, 0]], bool))
    array([[9., 1., 1., 1.]], dtype=float32)
    """
    m = np.asarray(mask, bool)
    if m.ndim < 2:
        raise ValueError(f"expected a (..., H, W) mask, got shape {m.shape}")
    n_fg = m.sum(axis=(-2, -1), keepdims=True)
    n_bg = m.shape[-2] * m.shape[-1] - n_fg
    w_fg = np.where((n_fg > 0) & (n_bg > 0), fg_factor * n_bg / np.maximum(n_fg, 1), 1.0)
    return np.where(m, w_fg, 1.0).astype(np.float32)


def adversarial_lambda(step: int, total: int) -> float:
    """The adversarial loss weight λ: linear from 8.3e-6 (step 0) to 0.1 (step ``total - 1``)."""
    if total < 1:
        raise ValueError(f"total must be at least 1, got {total}")
    frac = min(max(step, 0) / max(total - 1, 1), 1.0)
    return LAMBDA_START + (LAMBDA_END - LAMBDA_START) * frac


def downsample_input(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Resize an ``(H, W)`` or ``(H, W, C)`` image to ``size × size`` as Sadanandan et al. do.

    Area-averaging (anti-aliased) resize in float32, range preserved. The
    aspect ratio is not kept (Sadanandan et al.'s images are square);
    :func:`spheroid_mask` maps the result back to the original shape.
    """
    from skimage.transform import resize

    a = np.asarray(image)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    out = resize(
        a.astype(np.float32),
        (size, size) + a.shape[2:],
        order=1,
        anti_aliasing=True,
        preserve_range=True,
    )
    return out.astype(np.float32)


def _nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Order-0 resize: each output pixel centre takes the input pixel it falls in (exact for
    integer factors)."""
    iy = ((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(int)
    ix = ((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(int)
    return mask[np.minimum(iy, mask.shape[0] - 1)[:, None], np.minimum(ix, mask.shape[1] - 1)]


def spheroid_mask(
    prob: np.ndarray,
    original_shape: tuple[int, int],
    *,
    threshold: float = THRESHOLD_8BIT / 255,
    min_size: int = MIN_SIZE,
    upsample: str = "mask",
) -> np.ndarray:
    """Sadanandan et al.'s post-processing: one spheroid mask at the original size.

    Threshold (``prob > 120/255``; a uint8 map is compared with 120), fill
    holes, drop objects under ``min_size`` pixels, keep the largest, then
    map back to ``original_shape``.

    Parameters
    ----------
    prob
        ``(h, w)`` probabilities at the network's resolution (480² in Sadanandan et al. 2017),
        float in [0, 1] or uint8 in [0, 255].
    original_shape
        Shape of the image before :func:`downsample_input`.
    upsample
        ``"mask"`` (default): clean up at the network's resolution, where the
        64-pixel limit is defined, and resize the final mask with nearest
        neighbour. ``"prob"``: resize the probabilities bilinearly first and
        clean up at full size (``min_size`` scaled by the area ratio): smoother
        outlines on 2160² images, same object.
    """
    from .postprocess import binary_mask

    p = np.asarray(prob)
    if p.ndim != 2:
        raise ValueError(f"expected an (h, w) probability map, got shape {p.shape}")
    if p.dtype == np.uint8:  # compare 8-bit values as integers: no rounding at 120
        p, threshold = p.astype(np.float32), float(round(threshold * 255))
    else:
        p = p.astype(np.float32)
    shape = tuple(int(s) for s in original_shape[:2])
    if upsample == "mask":
        m = binary_mask(
            p, threshold=threshold, fill_holes=True, min_size=min_size, largest_only=True
        )
        return _nearest(m, shape)
    if upsample == "prob":
        from skimage.transform import resize

        big = resize(p, shape, order=1, anti_aliasing=False)
        scale = shape[0] * shape[1] / (p.shape[0] * p.shape[1])
        return binary_mask(
            big,
            threshold=threshold,
            fill_holes=True,
            min_size=int(round(min_size * scale)),
            largest_only=True,
        )
    raise ValueError(f"upsample must be 'mask' or 'prob', got {upsample!r}")
