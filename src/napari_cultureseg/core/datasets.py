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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .augment import AugmentSpec, appearance, dihedral, draw_zoom, resample_patch
from .images import SUFFIXES, ImageError, InputSpec, read_array, read_image, to_model_input
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
        ``(C, H, W)`` float32 model input (see :func:`images.to_model_input`).
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
        Class names (or :class:`bundles.ClassSpec`), in the model's output order.
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
        the model's training size (:func:`scale_zooms`).

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


def zoom_sample(sample: Sample, zoom: float, soft=()) -> Sample:
    """``sample`` resampled by ``zoom`` (> 1 enlarges), as :func:`load_folder` resamples images.

    The image bilinearly (area-averaged when shrinking), 0/1 targets bilinearly
    then at 0.5, ``soft`` channels (distances; a tuple or ``{distance channel:
    class channel}``) bilinearly, ``valid`` so that a pixel is known only where
    all it covers was, instance labels by nearest neighbour.
    """
    from .images import resize_planes, zoomed_shape

    if zoom == 1.0:
        return sample
    shape = zoomed_shape(sample.shape, zoom)
    x = resize_planes(sample.image, shape)
    t = resize_planes(sample.target.astype(np.float32), shape, anti_alias=False)
    v = resize_planes(sample.valid.astype(np.float32), shape, anti_alias=False) > 0.999
    binary = np.ones(t.shape[0], bool)
    binary[list(soft)] = False
    t = np.where(binary[:, None, None], t >= 0.5, t).astype(sample.target.dtype)
    for d, c in soft.items() if isinstance(soft, Mapping) else ():
        if c is not None:  # a flow (None) keeps its resampled values
            t[d][t[c] == 0] = 0
    labels = (
        {c: _resample_labels(m, shape) for c, m in sample.labels.items()} if sample.labels else None
    )
    return Sample(sample.name, x, t, v, sample.group, labels)


def scale_zooms(
    folder: str | Path,
    reference: str,
    diameter: float | None,
    *,
    group_of: Callable[[str], str] = experiment_of,
    per: str = "group",
) -> tuple[dict[str, float], dict[str, float]]:
    """Zooms that bring the ``reference`` objects of a training folder to ``diameter`` px.

    The median object diameter is measured per experiment (``per="group"``:
    one zoom for all images of an experiment, robust to a field with three
    cells) or per image (``per="image"``); images without that class's mask
    take their experiment's zoom, or none.

    Returns
    -------
    (zooms, diameters)
        ``{id: zoom}`` and ``{id: measured median diameter at the data's own
        scale}`` (only ids with objects). With ``diameter`` None every zoom is 1.
    """
    from .scale import object_diameters

    if per not in ("group", "image"):
        raise ValueError(f"scale per must be 'group' or 'image', not {per!r}")
    per_image: dict[str, np.ndarray] = {}
    groups: dict[str, list[str]] = {}
    for _, stem, masks in _annotated(folder, [reference], keep_unannotated=True):
        groups.setdefault(group_of(stem), []).append(stem)
        if masks[reference] is not None:
            d = object_diameters(read_array(masks[reference]))
            if d.size:
                per_image[stem] = d
    measured = {k: float(np.median(v)) for k, v in per_image.items()}
    zooms: dict[str, float] = {}
    for stems in groups.values():
        pooled = [per_image[k] for k in stems if k in per_image]
        g_diam = float(np.median(np.concatenate(pooled))) if pooled else None
        for k in stems:
            d = measured.get(k) if per == "image" and k in measured else g_diam
            zooms[k] = diameter / d if diameter and d else 1.0
    return zooms, measured


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


def match_to_brightest(
    train: Sequence[Sample], val: Sequence[Sample], spec: InputSpec, *, n_quantiles: int = 256
) -> tuple[list[Sample], list[Sample], InputSpec]:
    """Aydın et al.'s (2022) histogram matching: every image onto the brightest training image.

    The reference is the training image with the highest mean intensity (after
    the spec's median filter and normalisation), stored as ``n_quantiles``
    quantiles in the returned spec, so that images segmented later are matched
    to the same reference (:func:`images.to_model_input`). Validation images
    are matched too, but never chosen as the reference.
    """
    from dataclasses import replace

    from .images import match_histogram

    if not train:
        raise ValueError("histogram matching needs training images to choose a reference from")
    brightest = max(train, key=lambda s: float(s.image.mean()))
    # rounded as config.json stores it, so training sees what inference will
    ref = np.round(np.quantile(brightest.image, np.linspace(0, 1, n_quantiles)), 6)

    def matched(samples):
        return [replace(s, image=match_histogram(s.image, ref)) for s in samples]

    spec = replace(spec, histogram_reference=tuple(float(v) for v in ref))
    return matched(train), matched(val), spec


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


# ---------------------------------------------------------------- patches for training


def _window(a: np.ndarray, y0: int, x0: int, side: int, fill=None) -> np.ndarray:
    """``a[:, y0:y0+side, x0:x0+side]``, padded where the window leaves the array.

    The padding mirrors the array (``fill`` None: the image) or is ``fill``
    (targets 0, valid False: the padding is unknown).
    """
    h, w = a.shape[-2:]
    ya, xa = max(0, y0), max(0, x0)
    yb, xb = min(h, y0 + side), min(w, x0 + side)
    out = a[:, ya:yb, xa:xb]
    pads = ((0, 0), (ya - y0, y0 + side - yb), (xa - x0, x0 + side - xb))
    if any(p for pair in pads for p in pair):
        if fill is None:
            out = np.pad(out, pads, mode="symmetric")
        else:
            out = np.pad(out, pads, constant_values=fill)
    return out


class PatchSampler:
    """Draws training patches with positives and negatives of every class (Rahkonen et al. 2020).

    Each patch is, with probability ``positive_fraction``, placed so that it
    contains a random *positive* pixel of a random class (class first, then an
    image that has it, then the pixel: rare classes are seen as often as common
    ones); with probability ``negative_fraction`` around a random known
    *background* pixel of a random class; otherwise uniformly. The chosen
    pixel lies anywhere in the central 3/4 of the patch, not always at its
    centre. Where a patch leaves its image (images smaller than the patch, or a
    zoomed-out window) the image is mirrored and the padding marked unknown.

    With a zoom in the :class:`~.augment.AugmentSpec`, a window of
    ``patch / zoom`` pixels is cut and resampled to ``patch``² (objects appear
    ``zoom`` times their size), before the flips and the appearance changes.

    Parameters
    ----------
    samples
        Training samples.
    patch
        Patch side in pixels.
    rng
        The numpy random generator (all randomness of sampling and augmentation).
    positive_fraction, negative_fraction
        Shares of positive- and background-centred patches.
    augment
        ``True`` (flips and mild intensity changes), ``False``, or an
        :class:`~.augment.AugmentSpec`.
    max_points
        Candidate pixels kept per image and class (a random subset), which bounds memory.
    soft
        Output channels holding distances rather than 0/1 masks (resampled as
        such): a tuple, or ``{distance channel: its class channel}`` (see
        :func:`~.augment.resample_patch`).
    flows
        ``(row channel, column channel)`` pairs of flow channels, turned with
        each flip and rotation (:func:`~.augment.turn_flows`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        patch: int,
        rng: np.random.Generator,
        *,
        positive_fraction: float = 0.5,
        negative_fraction: float = 0.25,
        augment: bool | AugmentSpec = True,
        max_points: int = 20000,
        soft=(),
        flows=(),
    ):
        if not samples:
            raise ValueError("no training samples")
        self.patch, self.rng = patch, rng
        self.spec = AugmentSpec.from_config(augment)
        self.soft = dict(soft) if isinstance(soft, Mapping) else tuple(soft)
        self.flows = tuple(tuple(p) for p in flows)
        self.fractions = (positive_fraction, negative_fraction)
        self.items = [(s.image, s.target, s.valid) for s in samples]
        k = self.items[0][1].shape[0]
        # candidates[kind][class]: (image index, flat pixel indices) of images that have any
        self.candidates: dict[str, list[list[tuple[int, np.ndarray]]]] = {}
        for kind in ("pos", "neg"):
            per_class: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(k)]
            for i, (_, t, v) in enumerate(self.items):
                for c in range(k):
                    m = v[c] & (t[c] > 0) if kind == "pos" else v[c] & (t[c] == 0)
                    idx = np.flatnonzero(m)
                    if idx.size > max_points:
                        idx = np.sort(rng.choice(idx, max_points, replace=False))
                    if idx.size:
                        per_class[c].append((i, idx))
            self.candidates[kind] = per_class

    def _origin(self, size: int, side: int, at: int | None) -> int:
        lo, hi = min(0, size - side), max(0, size - side)
        if at is None:
            return int(self.rng.integers(lo, hi + 1))
        offset = int(self.rng.integers(side // 8, side - side // 8))
        return int(np.clip(at - offset, lo, hi))

    def draw(self, for_class: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: image ``(C, P, P)`` float32, target ``(K, P, P)``, valid bool.

        ``for_class``: positives and negatives of this class only (Rahkonen et al. 2020 draws
        each per-class network's patches for its own class).
        """
        u = self.rng.random()
        kind = "pos" if u < self.fractions[0] else "neg" if u < sum(self.fractions) else None
        classes = [
            c
            for c, lst in enumerate(self.candidates.get(kind, []))
            if lst and for_class in (None, c)
        ]
        at = None
        if kind is not None and classes:
            lst = self.candidates[kind][classes[int(self.rng.integers(len(classes)))]]
            i, idx = lst[int(self.rng.integers(len(lst)))]
            at = divmod(int(idx[int(self.rng.integers(idx.size))]), self.items[i][0].shape[-1])
        else:
            i = int(self.rng.integers(len(self.items)))
        x, t, v = self.items[i]
        zoom = draw_zoom(self.spec, self.rng)
        side = max(8, int(round(self.patch / zoom)))
        y0 = self._origin(x.shape[-2], side, None if at is None else at[0])
        x0 = self._origin(x.shape[-1], side, None if at is None else at[1])
        x = _window(x, y0, x0, side)
        t = _window(t, y0, x0, side, 0)
        v = _window(v, y0, x0, side, False)
        if side != self.patch:
            x, t, v = resample_patch(x, t, v, self.patch, self.soft)
        if self.spec.dihedral:
            x, t, v = dihedral((x, t, v), self.rng, self.flows)
        x = appearance(x, self.spec, self.rng)
        return (
            np.ascontiguousarray(x, np.float32),
            np.ascontiguousarray(t, np.float32 if t.dtype.kind == "f" else t.dtype),
            np.ascontiguousarray(v),
        )

    def batch(
        self, n: int, for_class: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` patches stacked: ``(n, C, P, P)``, ``(n, K, P, P)``, ``(n, K, P, P)``."""
        xs, ts, vs = zip(*(self.draw(for_class) for _ in range(n)), strict=True)
        return np.stack(xs), np.stack(ts), np.stack(vs)
