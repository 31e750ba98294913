"""Training samples from the seeded synthetic generators.

The six-class and spheroid default models learn from synthetic images whose
masks are exact (:mod:`.culture`, :mod:`.spheroid`). An image is a
pure function of its generator ("kind"), seed and size, so a set of samples
is named by a seed range, and training, validation and test sets are kept
apart by keeping their seeds apart::

    train = synthetic_samples("culture", range(0, 24), classes=class_specs())
    val = synthetic_samples("culture", range(24, 30), classes=class_specs())

In a training YAML (:func:`training.prepare_from_config`)::

    data:
      - synthetic: culture        # or spheroid-easy, spheroid-hard
        seeds: [0, 24]            # start, stop: seeds 0, 1, ..., 23
        shape: [1040, 1392]
        rgb: true
        use: train                # train | val | split

Seeds in :data:`TEST_SEEDS` are reserved for held-out benchmarks (e.g.
``benchmarks/cultures.py``): no training or validation entry may use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from ..bundle_config import boundary_channels
from ..datasets import Sample, borders
from ..model_input import InputSpec, to_model_input

KINDS = ("culture", "spheroid-easy", "spheroid-hard")
"""Generators: ``culture`` (Rahkonen et al.'s six classes S, I, IP, P, O, R) and
bright-field spheroid wells of Sadanandan et al. 2017 (one class ``spheroid``)."""

TEST_SEEDS = range(1000, 2000)
"""Seeds reserved for held-out test images; training and validation must not use them."""

_NAME = re.compile(r"^(?P<kind>[a-z-]+)-s(?P<seed>\d+)$")


def sample_name(kind: str, seed: int) -> str:
    """The name of the synthetic image ``kind``/``seed``, e.g. ``culture-s0007``.

    >>> sample_name("culture", 7)
    'culture-s0007'
    """
    return f"{kind}-s{int(seed):04d}"


def parse_name(name: str) -> tuple[str, int] | None:
    """``(kind, seed)`` of a synthetic sample name, None for any other name.

    >>> parse_name("spheroid-hard-s0031"), parse_name("set01")
    (('spheroid-hard', 31), None)
    """
    m = _NAME.match(name)
    if m is None or m["kind"] not in KINDS:
        return None
    return m["kind"], int(m["seed"])


def seed_range(value) -> range:
    """Seeds of a YAML ``seeds: [start, stop]`` entry: ``range(start, stop)``.

    Raises
    ------
    ValueError
        Not two integers with ``0 <= start < stop``.
    """
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] < value[1]
    ):
        return range(value[0], value[1])
    raise ValueError(
        f"seeds must be [start, stop] with 0 <= start < stop (seeds start..stop-1), got {value!r}"
    )


def generate(
    kind: str, seed: int, *, shape=(1040, 1392), rgb: bool = True, density: float = 1.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One synthetic image and its exact masks by class name.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    seed
        The generator's seed.
    shape
        ``(H, W)``; spheroid wells are square (``H == W``).
    rgb
        ``culture`` only: 8-bit RGB as a Cell-IQ saves it (else gray). Wells are gray.
    density
        ``culture`` only: multiplies the number of single and invasive cells.

    Returns
    -------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, 3)`` uint8.
    masks : dict[str, numpy.ndarray]
        ``(H, W)`` bool per class (the culture's six, or ``spheroid``).
    """
    h, w = (int(s) for s in shape)
    if kind == "culture":
        from .culture import culture

        return culture((h, w), seed=seed, rgb=rgb, density=density)
    if kind in ("spheroid-easy", "spheroid-hard"):
        if h != w:
            raise ValueError(f"{kind} images are square wells; give shape [{h}, {h}], not {[h, w]}")
        if rgb:
            raise ValueError(f"{kind} images are bright-field gray; set rgb: false")
        from .spheroid import spheroid_well

        image, mask = spheroid_well(h, seed=seed, difficulty=kind.split("-")[1])
        return image, {"spheroid": mask}
    raise ValueError(f"unknown synthetic kind {kind!r}; use one of {', '.join(KINDS)}")


def synthetic_samples(
    kind: str,
    seeds: Iterable[int],
    *,
    classes: Sequence,
    spec: InputSpec | None = None,
    shape: Sequence[int] = (1040, 1392),
    rgb: bool = True,
    density: float = 1.0,
) -> list[Sample]:
    """Training samples of the synthetic images ``kind`` with these seeds.

    Parameters
    ----------
    kind, shape, rgb, density
        As in :func:`generate`.
    seeds
        One image per seed; the same seed always gives the same sample.
    classes
        Class names or :class:`bundle_config.ClassSpec` in the model's output order.
        A class the generator does not draw is *unknown* (``valid`` False), as
        a missing mask file is in :func:`datasets.load_folder`; border
        channels of ``separate: boundary`` classes are added the same way.
    spec
        How the image becomes model input (:func:`model_input.to_model_input`);
        default ``InputSpec()`` (gray, percentile-normalised).

    Returns
    -------
    list[Sample]
        Named :func:`sample_name` (kind, seed), group ``kind``, in seed order.

    Raises
    ------
    ValueError
        Unknown kind, or none of ``classes`` is drawn by this generator.

    Examples
    --------
    >>> s = synthetic_samples("culture", [3], classes=["O", "R"], shape=(64, 96))[0]
    >>> s.name, s.image.shape, s.target.shape
    ('culture-s0003', (1, 64, 96), (2, 64, 96))
    """
    spec = spec or InputSpec()
    names = [c if isinstance(c, str) else c.name for c in classes]
    borders_of = boundary_channels(classes)
    out = []
    for seed in seeds:
        image, masks = generate(kind, int(seed), shape=shape, rgb=rgb, density=density)
        if not set(names) & set(masks):
            raise ValueError(
                f"the {kind} generator draws classes {', '.join(masks)}; the model's classes "
                f"{', '.join(names)} include none of them; use the generator that matches "
                "the model"
            )
        h, w = image.shape[:2]
        n_out = len(names) + len(borders_of)
        target = np.zeros((n_out, h, w), np.uint8)
        valid = np.zeros((n_out, h, w), bool)
        for k, name in enumerate(names):
            if name in masks:
                target[k], valid[k] = masks[name], True
                if name in borders_of:
                    target[borders_of[name]], valid[borders_of[name]] = borders(masks[name]), True
        x = to_model_input(image, spec)
        out.append(Sample(sample_name(kind, seed), x, target, valid, kind))
    return out


def check_disjoint(train: Sequence[Sample], val: Sequence[Sample]) -> None:
    """Refuse overlapping training and validation sets, and synthetic test seeds in either.

    Samples are compared by name, so the same file or the same synthetic
    seed listed twice is caught.

    Raises
    ------
    ValueError
        Saying which images are in both sets, or which reserved test seeds are used.
    """
    both = sorted({s.name for s in train} & {s.name for s in val})
    if both:
        shown = ", ".join(both[:5]) + (" ..." if len(both) > 5 else "")
        raise ValueError(
            f"{len(both)} image(s) are in both training and validation ({shown}); give the "
            "validation entry other seeds (or folders) than the training entries"
        )
    reserved = sorted(
        s.name for s in (*train, *val) if (p := parse_name(s.name)) and p[1] in TEST_SEEDS
    )
    if reserved:
        raise ValueError(
            f"seeds {TEST_SEEDS.start}..{TEST_SEEDS.stop - 1} are reserved for held-out tests, "
            f"but {', '.join(reserved[:5])} would be used for training or validation; "
            "pick seeds outside that range"
        )
