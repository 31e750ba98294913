"""Training samples: images with per-class masks and where those masks are known.

A folder of training data holds one image per id and one mask per class::

    data/
    ├── set01_image.tif      the image (any format :func:`images.read_image` reads)
    ├── set01_cell.tif       mask of class ``cell``: binary {0, 1} or instance labels
    ├── set02_image.png
    └── set02_nucleus.tif    set02 has no ``cell`` mask → its ``cell`` channel is unknown

A class without a mask file is *unknown* for that image, not background: its
``valid`` channel is all False and the training loss ignores it (an image
annotated for nuclei only still teaches nuclei without teaching "no cells").

:func:`split` divides samples into training and validation sets
deterministically, optionally keeping whole experiments apart or drawing the
validation images from every experiment.

Drawing training inputs from loaded samples (zooming them to the model's scale,
histogram matching, the augmented patch sampler) is in :mod:`.patches`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import SUFFIXES, ImageError, read_array, read_image
from .model_input import InputSpec, to_model_input
from .targets import borders  # noqa: F401  (the border target, importable from here as before)

MASK_SUFFIXES = (".tif", ".tiff", ".png")

# aiSEGcell-style experiment ids: date (yymmdd), initials, magnification, e.g. 181024TK20
_EXPERIMENT = re.compile(r"(?:^|_)(\d{6}[A-Za-z]{2}\d{2})(?=_|$)")


@dataclass(frozen=True, eq=False)
class Sample:
    """One training image with its per-class targets.

    Attributes
    ----------
    name
        The image id (file name without ``_image.<ext>``).
    image
        ``(C, H, W)`` float32 model input (see :func:`model_input.to_model_input`).
    target
        ``(K, H, W)`` uint8 in {0, 1}, one channel per class; float16 in [0, 1]
        when there are distance or flow channels (given as float32, stored as
        float16: half the memory, 0.0005 from the float32 value at most).
    valid
        ``(K, H, W)`` bool: False where class k is unknown (not annotated or not
        reviewed); such pixels contribute nothing to the loss of class k. When
        every channel is wholly known or wholly unknown (the usual case) it is
        stored as a read-only broadcast of one flag per channel, not a byte per
        pixel (:func:`compact_valid`).
    group
        The experiment the image belongs to (see :func:`experiment_of`).
    labels
        ``{class channel: instance labels}`` where the data had them (object
        scores during validation use them; binary masks are split into
        connected components instead).
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    group: str = ""
    labels: dict | None = None

    def __post_init__(self):
        c, h, w = self.image.shape
        if self.target.shape != self.valid.shape or self.target.shape[1:] != (h, w):
            raise ValueError(
                f"sample {self.name!r}: image {self.image.shape}, target {self.target.shape} "
                f"and valid {self.valid.shape} must share (H, W), and target/valid (K, H, W)"
            )
        # A training set is held in memory for the whole run (200 co-cultures
        # of 1536² with 8 outputs were 15 GB of float32 targets and 3.8 GB of
        # valid bytes): keep soft targets in float16 and uniform valid flags as
        # a broadcast. Patches come out as float32 (PatchSampler.draw).
        if self.target.dtype.kind == "f" and self.target.dtype != np.float16:
            object.__setattr__(self, "target", self.target.astype(np.float16))
        object.__setattr__(self, "valid", compact_valid(self.valid))
        if self.labels:  # instance labels as the smallest unsigned type that holds them
            object.__setattr__(
                self, "labels", {c: _smallest_labels(m) for c, m in self.labels.items()}
            )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[1:])


def compact_valid(valid: np.ndarray) -> np.ndarray:
    """``valid`` as a read-only ``(K, H, W)`` broadcast of one flag per channel, if it is one.

    A channel that is all known or all unknown needs one flag, not a byte per
    pixel; a mask with known and unknown pixels in one channel is returned
    unchanged (as bool). Slicing and reading work as on the full array.
    """
    v = np.asarray(valid, bool)
    if v.ndim != 3 or v.size == 0 or v.strides[1:] == (0, 0):
        return v
    flags = np.empty(v.shape[0], bool)
    for k, ch in enumerate(v):
        flags[k] = ch.flat[0]
        if (ch.all() if flags[k] else ch.any()) != flags[k]:
            return v
    return np.broadcast_to(flags[:, None, None], v.shape)


def _smallest_labels(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m)
    if m.dtype.kind not in "iu" or m.min(initial=0) < 0:
        return m
    top = int(m.max(initial=0))
    for t in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(t).max:
            return m if m.dtype.itemsize <= np.dtype(t).itemsize else m.astype(t)
    return m


def experiment_of(name: str) -> str:
    """The experiment an image id belongs to.

    An aiSEGcell-style id (``yymmddXXnn``) anywhere among the ``_``-separated
    parts wins, so ``fig1-a_b_c_181024TK20_p0002_t00006`` and
    ``181024TK20_p0002_t00012`` are both ``181024TK20``; otherwise it is the
    part before the first ``_`` (``set01`` → ``set01``).

    >>> experiment_of("fig1-a_b_c_181024TK20_p0002_t00006_z001")
    '181024TK20'
    >>> experiment_of("set07")
    'set07'
    """
    m = _EXPERIMENT.search(name)
    if m:
        return m.group(1)
    return name.split("_", 1)[0]


def _class_name(c) -> str:
    return c if isinstance(c, str) else c.name


def _find_mask(folder: Path, stem: str, cls: str) -> Path | None:
    for suffix in MASK_SUFFIXES:
        p = folder / f"{stem}_{cls}{suffix}"
        if p.is_file():
            return p
    return None


def _downsample_factor(shape: tuple[int, int], max_side: int | None) -> int:
    if not max_side or max(shape) <= max_side:
        return 1
    return int(np.ceil(max(shape) / max_side))


def load_folder(
    folder: str | Path,
    classes: Sequence,
    spec: InputSpec = InputSpec(),  # noqa: B008  (frozen: immutable)
    *,
    max_side: int | None = None,
    group_of: Callable[[str], str] = experiment_of,
    keep_unannotated: bool = False,
    zoom: Mapping[str, float] | None = None,
) -> list[Sample]:
    """Read every ``<id>_image.<ext>`` in ``folder`` with the masks that exist beside it.

    Parameters
    ----------
    folder
        The data folder (not searched recursively).
    classes
        Class names (or :class:`bundle_config.ClassSpec`), in the model's output order.
    spec
        How images become model input.
    max_side
        Downsample (by an integer factor, area-averaged; masks by majority) an
        image whose longer side exceeds this. Default: never; only a training
        config that asks for it should change the scale the model learns.
    group_of
        Maps an id to its group (experiment) for :func:`split`.
    keep_unannotated
        Keep images that have no mask of any class (all pixels unknown).
    zoom
        ``{id: zoom}``: resample these images (and their masks, as labels) by
        that factor before the targets are made, e.g. to bring their objects to
        the model's training size (:func:`.patches.scale_zooms`).

    Returns
    -------
    list[Sample]
        Sorted by name.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist or holds no ``*_image.*`` file.
    ImageError
        An image or mask cannot be read, or a mask's shape differs from its image.
    """
    from .targets import targets_from_masks

    zoom = zoom or {}
    names = [_class_name(c) for c in classes]
    samples = []
    for path, stem, masks in _annotated(folder, names, keep_unannotated):
        plane = read_image(path)
        h, w = plane.shape[:2]
        arrays = {}
        for c, mp in masks.items():
            if mp is None:
                continue
            m = read_array(mp)
            if m.shape != (h, w):
                raise ImageError(
                    f"{mp.name}: mask shape {m.shape} differs from its image {(h, w)}; "
                    "masks must be drawn on the image they belong to"
                )
            arrays[c] = m
        z = float(zoom.get(stem, 1.0))
        x = to_model_input(plane, spec, zoom=z)
        if z != 1.0:
            arrays = {c: _resample_labels(m, x.shape[1:]) for c, m in arrays.items()}
        target, valid = targets_from_masks(arrays, classes, x.shape[1:])
        factor = _downsample_factor(x.shape[1:], max_side)
        labels = None
        if factor > 1:
            x, target, valid = _shrink(x, target, valid, factor)
        else:
            labels = {names.index(c): m for c, m in arrays.items() if m.max(initial=0) > 1}
        samples.append(Sample(stem, x, target, valid, group_of(stem), labels or None))
    return samples


def _annotated(folder, names: Sequence[str], keep_unannotated: bool = False):
    """``(image path, id, {class: mask path or None})`` of a training folder, sorted by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such data folder")
    images = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.stem.endswith("_image")
    )
    if not images:
        raise FileNotFoundError(
            f"{folder} holds no training images; name them <id>_image.<tif|png> with masks "
            f"<id>_<class>.tif beside them (classes: {', '.join(names)})"
        )
    for path in images:
        stem = path.stem[: -len("_image")]
        masks = {c: _find_mask(folder, stem, c) for c in names}
        if keep_unannotated or any(masks.values()):
            yield path, stem, masks


def _resample_labels(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A mask or label image resampled to ``shape``: nearest neighbour, so labels stay labels."""
    from skimage.transform import resize

    m = np.asarray(m)
    out = resize(m, shape, order=0, preserve_range=True, anti_aliasing=False)
    return out.astype(m.dtype)


def _shrink(x: np.ndarray, target: np.ndarray, valid: np.ndarray, f: int):
    """Integer downsampling: mean-pool the image, majority-vote the masks.

    A pooled pixel is valid only if all its source pixels were, so no unknown
    pixel leaks into the loss.
    """
    c, h, w = x.shape
    h2, w2 = h // f * f, w // f * f
    x = x[:, :h2, :w2].reshape(c, h2 // f, f, w2 // f, f).mean(axis=(2, 4), dtype=np.float32)
    t = target[:, :h2, :w2].reshape(-1, h2 // f, f, w2 // f, f).mean(axis=(2, 4), dtype=np.float32)
    # 0/1 channels by majority; channels with values between (distances) by their mean
    soft = np.array([bool(np.any((ch > 0) & (ch < 1))) for ch in target])
    t = np.where(soft[:, None, None], t, t >= 0.5).astype(target.dtype)
    v = valid[:, :h2, :w2].reshape(-1, h2 // f, f, w2 // f, f).all(axis=(2, 4))
    return x, t, v


def split(
    samples: Sequence[Sample],
    val_fraction: float,
    seed: int = 0,
    *,
    by_group: bool = False,
    stratify: bool = False,
) -> tuple[list[Sample], list[Sample]]:
    """Deterministically split samples into ``(train, val)``.

    Parameters
    ----------
    samples
        The samples; their order does not matter (they are sorted by name first).
    val_fraction
        Fraction of the samples for validation; ``round(fraction · n)`` images,
        at least one if the fraction is positive and there are two or more samples.
    seed
        Seed of the shuffle: the same seed gives the same split.
    by_group
        Keep whole groups (experiments) apart: validation holds complete groups
        (as close to the fraction as whole groups allow), so the validation
        score measures generalisation to unseen experiments.
    stratify
        Draw the validation images from every group in proportion to its size
        (largest remainders), so every experiment is seen in training and
        represented in validation. Ignored when ``by_group`` is set.

    Returns
    -------
    tuple[list[Sample], list[Sample]]
        Training and validation samples, each sorted by name.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(samples, key=lambda s: s.name)
    n = len(ordered)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    if n_val == 0:
        return ordered, []
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(ordered):
        groups.setdefault(s.group, []).append(i)
    if by_group:
        keys = sorted(groups)
        if len(keys) < 2:
            raise ValueError(
                f"cannot keep groups apart: all {n} samples are in group {keys[0]!r}; "
                "use by_group=False"
            )
        val_idx: list[int] = []
        for j in rng.permutation(len(keys)):
            g = groups[keys[j]]
            if val_idx and abs(len(val_idx) + len(g) - n_val) >= abs(len(val_idx) - n_val):
                continue
            if len(val_idx) + len(g) >= n:  # never put every sample in validation
                continue
            val_idx += g
    elif stratify:
        keys = sorted(groups)
        quota = np.array([val_fraction * len(groups[k]) for k in keys])
        take = np.floor(quota).astype(int)
        rest = n_val - take.sum()
        if rest > 0:
            # largest remainders, ties broken by the seeded shuffle
            order = sorted(rng.permutation(len(keys)), key=lambda j: -(quota[j] - take[j]))
            for j in order[:rest]:
                take[j] += 1
        val_idx = []
        for k, t in zip(keys, take, strict=True):
            g = groups[k]
            val_idx += [g[i] for i in rng.permutation(len(g))[: min(t, len(g))]]
    else:
        val_idx = list(rng.permutation(n)[:n_val])
    chosen = set(int(i) for i in val_idx)
    train = [s for i, s in enumerate(ordered) if i not in chosen]
    val = [s for i, s in enumerate(ordered) if i in chosen]
    return train, val
