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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundles import boundary_channels
from .images import SUFFIXES, ImageError, InputSpec, read_array, read_image, to_model_input

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
        ``(K, H, W)`` uint8 in {0, 1}, one channel per class.
    valid
        ``(K, H, W)`` bool: False where class k is unknown (not annotated or not
        reviewed); such pixels contribute nothing to the loss of class k.
    group
        The experiment the image belongs to (see :func:`experiment_of`).
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    group: str = ""

    def __post_init__(self):
        c, h, w = self.image.shape
        if self.target.shape != self.valid.shape or self.target.shape[1:] != (h, w):
            raise ValueError(
                f"sample {self.name!r}: image {self.image.shape}, target {self.target.shape} "
                f"and valid {self.valid.shape} must share (H, W), and target/valid (K, H, W)"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[1:])


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
    spec: InputSpec = InputSpec(),
    *,
    max_side: int | None = None,
    group_of: Callable[[str], str] = experiment_of,
    keep_unannotated: bool = False,
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
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such data folder")
    names = [_class_name(c) for c in classes]
    borders_of = boundary_channels(classes)
    images = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.stem.endswith("_image")
    )
    if not images:
        raise FileNotFoundError(
            f"{folder} holds no training images; name them <id>_image.<tif|png> with masks "
            f"<id>_<class>.tif beside them (classes: {', '.join(names)})"
        )
    samples = []
    for path in images:
        stem = path.stem[: -len("_image")]
        masks = {c: _find_mask(folder, stem, c) for c in names}
        if not keep_unannotated and not any(masks.values()):
            continue
        plane = read_image(path)
        factor = _downsample_factor(plane.shape[:2], max_side)
        h, w = plane.shape[:2]
        x = to_model_input(plane, spec)
        n_out = len(names) + len(borders_of)
        target = np.zeros((n_out, h, w), np.uint8)
        valid = np.zeros((n_out, h, w), bool)
        for k, c in enumerate(names):
            if masks[c] is None:
                continue
            m = read_array(masks[c])
            if m.shape != (h, w):
                raise ImageError(
                    f"{masks[c].name}: mask shape {m.shape} differs from its image {(h, w)}; "
                    "masks must be drawn on the image they belong to"
                )
            target[k] = m > 0  # instance labels → foreground
            valid[k] = True
            if c in borders_of:
                target[borders_of[c]], valid[borders_of[c]] = borders(m), True
        if factor > 1:
            x, target, valid = _shrink(x, target, valid, factor)
        samples.append(Sample(stem, x, target, valid, group_of(stem)))
    return samples


def borders(labels: np.ndarray) -> np.ndarray:
    """The target of a border channel: object pixels next to another object or the background.

    ``labels`` are instance labels (a binary mask is split into its 8-connected
    components first, so objects that touch in it cannot be told apart).
    Between two touching objects the border is two pixels wide, one from each.
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    if labels.dtype == bool or labels.max() <= 1:
        from scipy import ndimage as ndi

        labels, _ = ndi.label(labels > 0, structure=np.ones((3, 3), bool))
    return find_boundaries(labels, mode="inner").astype(np.uint8)


def _shrink(x: np.ndarray, target: np.ndarray, valid: np.ndarray, f: int):
    """Integer downsampling: mean-pool the image, majority-vote the masks.

    A pooled pixel is valid only if all its source pixels were, so no unknown
    pixel leaks into the loss.
    """
    c, h, w = x.shape
    h2, w2 = h // f * f, w // f * f
    x = x[:, :h2, :w2].reshape(c, h2 // f, f, w2 // f, f).mean(axis=(2, 4), dtype=np.float32)
    t = target[:, :h2, :w2].reshape(-1, h2 // f, f, w2 // f, f).mean(axis=(2, 4)) >= 0.5
    v = valid[:, :h2, :w2].reshape(-1, h2 // f, f, w2 // f, f).all(axis=(2, 4))
    return x, t.astype(np.uint8), v


def match_to_brightest(
    train: Sequence[Sample], val: Sequence[Sample], spec: InputSpec, *, n_quantiles: int = 256
) -> tuple[list[Sample], list[Sample], InputSpec]:
    """Seed 004's histogram matching: every image onto the brightest training image.

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
        return [Sample(s.name, match_histogram(s.image, ref), s.target, s.valid, s.group)
                for s in samples]

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


def _pad_to_patch(s: Sample, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflect-pad a sample smaller than ``patch``; the padding is unknown (valid False)."""
    h, w = s.shape
    ph, pw = max(0, patch - h), max(0, patch - w)
    if ph == 0 and pw == 0:
        return s.image, s.target, s.valid
    x = np.pad(s.image, ((0, 0), (0, ph), (0, pw)), mode="reflect")
    t = np.pad(s.target, ((0, 0), (0, ph), (0, pw)))
    v = np.pad(s.valid, ((0, 0), (0, ph), (0, pw)), constant_values=False)
    return x, t, v


class PatchSampler:
    """Draws training patches with positives and negatives of every class (seed 000).

    Each patch is, with probability ``positive_fraction``, placed so that it
    contains a random *positive* pixel of a random class (class first, then an
    image that has it, then the pixel: rare classes are seen as often as common
    ones); with probability ``negative_fraction`` around a random known
    *background* pixel of a random class; otherwise uniformly. The chosen
    pixel lies anywhere in the central 3/4 of the patch, not always at its
    centre. Images smaller than the patch are reflect-padded with the padding
    marked unknown.

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
        Apply :func:`augment` to each patch.
    max_points
        Candidate pixels kept per image and class (a random subset), which bounds memory.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        patch: int,
        rng: np.random.Generator,
        *,
        positive_fraction: float = 0.5,
        negative_fraction: float = 0.25,
        augment: bool = True,
        max_points: int = 20000,
    ):
        if not samples:
            raise ValueError("no training samples")
        self.patch, self.rng, self.do_augment = patch, rng, augment
        self.fractions = (positive_fraction, negative_fraction)
        self.items = [_pad_to_patch(s, patch) for s in samples]
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

    def _origin(self, size: int, at: int | None) -> int:
        p = self.patch
        if at is None:
            return int(self.rng.integers(0, size - p + 1))
        offset = int(self.rng.integers(p // 8, p - p // 8))
        return int(np.clip(at - offset, 0, size - p))

    def draw(self, for_class: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: image ``(C, P, P)`` float32, target ``(K, P, P)`` uint8, valid bool.

        ``for_class``: positives and negatives of this class only (seed 000 draws
        each per-class network's patches for its own class).
        """
        u = self.rng.random()
        kind = "pos" if u < self.fractions[0] else "neg" if u < sum(self.fractions) else None
        classes = [c for c, lst in enumerate(self.candidates.get(kind, []))
                   if lst and for_class in (None, c)]
        at = None
        if kind is not None and classes:
            lst = self.candidates[kind][classes[int(self.rng.integers(len(classes)))]]
            i, idx = lst[int(self.rng.integers(len(lst)))]
            at = divmod(int(idx[int(self.rng.integers(idx.size))]), self.items[i][0].shape[-1])
        else:
            i = int(self.rng.integers(len(self.items)))
        x, t, v = self.items[i]
        y0 = self._origin(x.shape[-2], None if at is None else at[0])
        x0 = self._origin(x.shape[-1], None if at is None else at[1])
        sl = (slice(None), slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
        x, t, v = x[sl], t[sl], v[sl]
        if self.do_augment:
            x, t, v = augment(x, t, v, self.rng)
        return (
            np.ascontiguousarray(x, np.float32),
            np.ascontiguousarray(t),
            np.ascontiguousarray(v),
        )

    def batch(
        self, n: int, for_class: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` patches stacked: ``(n, C, P, P)``, ``(n, K, P, P)``, ``(n, K, P, P)``."""
        xs, ts, vs = zip(*(self.draw(for_class) for _ in range(n)), strict=True)
        return np.stack(xs), np.stack(ts), np.stack(vs)


def augment(x: np.ndarray, t: np.ndarray, v: np.ndarray, rng: np.random.Generator):
    """Random dihedral transform (flips, 90° rotations), then gamma and brightness/contrast.

    Gamma acts on the [0, 1] part of the percentile-normalised intensities
    (values beyond the percentiles keep their excess linearly), so it never
    makes negative values NaN; brightness/contrast is ``a·x + b`` with
    ``a`` ∈ [0.8, 1.25] (log-uniform) and ``b`` ∈ [−0.1, 0.1].
    """
    k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
    do_gamma, gamma = rng.random() < 0.5, float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    do_bright, a, b = (
        rng.random() < 0.5,
        float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
        float(rng.uniform(-0.1, 0.1)),
    )

    def geo(arr):
        arr = np.rot90(arr, k, axes=(-2, -1))
        return arr[..., ::-1] if flip else arr

    x, t, v = geo(x), geo(t), geo(v)
    if do_gamma:
        c = np.clip(x, 0.0, 1.0)
        x = c**gamma + (x - c)
    if do_bright:
        x = x * a + b
    return x.astype(np.float32, copy=False), t, v
