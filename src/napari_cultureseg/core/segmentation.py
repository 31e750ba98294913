"""What :func:`.segment.segment` returns: a :class:`Segmentation` keeps the
probabilities on the network's grid and turns them into masks, instances and an
uncertainty on demand, so a threshold can change without running the network again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .bundle_config import (
    ClassSpec,
    DerivedClass,
    boundary_channels,
    distance_channels,
    flow_channels,
)
from .instance_labels import transfer_labels
from .model_input import resample_plane
from .postprocess import above, binary_mask, instances


@dataclass(frozen=True)
class Segmentation:
    """Per-class probabilities of one image and how to turn them into masks."""

    raw: np.ndarray
    """``(K, h, w)`` float32 probabilities as the network produced them, on its grid:
    one independent probability per class (then the border and distance channels of
    the classes that have them, see :func:`bundle_config.boundary_channels`). The image's
    own grid when it was not resampled; see :attr:`probabilities`."""
    classes: tuple[ClassSpec, ...]
    derived: tuple[DerivedClass, ...] = ()
    zoom: float = 1.0
    """The zoom the image was resampled by before the network (1: its own pixels)."""
    note: str = ""
    """How the zoom was chosen (e.g. "nucleus diameter 18.2 px (estimated)"), if known."""
    shape: tuple[int, int] | None = None
    """The image's ``(H, W)`` when the network saw it resampled (a zoom to the
    model's object size, see :mod:`.scale`, or ``InputSpec.resize_to``); None: ``raw``'s."""
    diameter: float | None = None
    """The model's training object diameter in network pixels (``ScaleSpec.diameter``),
    if it has one: how far a flow is followed (:meth:`instances`)."""

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.shape) if self.shape is not None else tuple(self.raw.shape[1:])

    @property
    def scale(self) -> float:
        """Image pixels per network pixel, by area (1 unless the network saw the image
        resampled); ``min_size`` counts network pixels, so masks on the image's grid
        scale it by this."""
        h, w = self.image_shape
        return h * w / (self.raw.shape[1] * self.raw.shape[2])

    def probability(self, k: int) -> np.ndarray:
        """Channel ``k`` of :attr:`raw` on the image's own grid, ``(H, W)`` float32.

        Resampled bilinearly when the network saw another grid, one channel at a
        time: on a whole-well mosaic the full stack would be ``K × H × W`` floats.
        """
        p = self.raw[k]
        if p.shape == self.image_shape:
            return p
        return np.clip(resample_plane(p, self.image_shape), 0.0, 1.0)

    @property
    def probabilities(self) -> np.ndarray:
        """``(K, H, W)`` float32: every channel of :attr:`raw` on the image's own grid.

        Computed on each access; prefer :meth:`probability` for one channel.
        """
        if self.raw.shape[1:] == self.image_shape:
            return self.raw
        return np.stack([self.probability(k) for k in range(len(self.raw))])

    @property
    def names(self) -> list[str]:
        """Class names, predicted ones first, then derived ones."""
        return [c.name for c in self.classes] + [d.name for d in self.derived]

    def spec(self, name: str) -> ClassSpec | DerivedClass:
        for c in (*self.classes, *self.derived):
            if c.name == name:
                return c
        raise KeyError(f"no class {name!r}; classes are {', '.join(self.names)}")

    def _min_size(self, spec) -> int:
        return int(round(getattr(spec, "min_size", 0) * self.scale))

    def _index(self, name: str) -> int:
        for k, c in enumerate(self.classes):
            if c.name == name:
                return k
        raise KeyError(f"no predicted class {name!r}; classes are {', '.join(self.names)}")

    def mask(self, name: str, threshold: float | None = None) -> np.ndarray:
        """Binary ``(H, W)`` mask of a predicted class at its (or the given) threshold."""
        k = self._index(name)
        c = self.classes[k]
        # thresholded here, so a mosaic's float plane is freed before the mask is cleaned
        above = self.probability(k) > (c.threshold if threshold is None else threshold)
        return _cleaned(above, c, self._min_size(c))

    def uncertainty(self) -> float:
        """How unsure the model is of this image: the mean binary entropy (bits) of its class
        probabilities, over every class and pixel of the network's grid.

        0 where every pixel is surely in or out of every class, 1 where all are at
        0.5. A field the model is unsure of is one whose correction would teach it
        most ("correct next", ``cultureseg segment --rank``).
        """
        total = 0.0
        for k in range(len(self.classes)):
            p = np.clip(self.raw[k].astype(np.float64), 1e-6, 1 - 1e-6)
            total += float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p))))
        return total / max(1, len(self.classes))

    def masks(self, thresholds: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
        """All masks by name, derived classes (e.g. cytoplasm = cell − nucleus) included."""
        thresholds = thresholds or {}
        out = {c.name: self.mask(c.name, thresholds.get(c.name)) for c in self.classes}
        for d in self.derived:
            m = out[d.base].copy()
            for other in d.minus:
                m &= ~out[other]
            out[d.name] = m
        return out

    def with_seeds(self, seeds: Mapping[str, float]) -> Segmentation:
        """This result with other distance seed thresholds (the Segment dock's *splitting*,
        ``cultureseg segment --splitting``): ``{class: threshold}``, each class one that is
        separated by a distance map. Higher cuts touching objects apart more readily, lower
        merges more; the masks do not change, only how they are cut into objects."""
        if not seeds:
            return self
        from dataclasses import replace

        return replace(self, classes=seeded_classes(self.classes, seeds))

    def instances(
        self, name: str, mask: np.ndarray | None = None, *, grid: str = "network"
    ) -> np.ndarray:
        """Instance labels of one class (its objects, separated as its spec says).

        Objects are separated on the network's grid, where they have the size the
        model learnt and every setting of the class (``min_size``, ``split_depth``,
        the distance seeds) means what it meant in training, then carried onto the
        image's grid with the outline of ``mask`` (default: the class's mask,
        :meth:`mask`), see :func:`instance_labels.transfer_labels`. ``grid="image"``
        separates them on the image's grid instead, with ``min_size`` and
        ``split_depth`` scaled (the way of releases before 2026-12; measured in
        ``benchmarks/grid.py``); a derived class is always separated there.
        """
        if grid not in ("network", "image"):
            raise ValueError(f"grid is 'network' or 'image', not {grid!r}")
        spec = self.spec(name)
        m = self.masks()[name] if mask is None else np.asarray(mask, bool)
        border = boundary_channels(self.classes).get(name)
        dist = distance_channels(self.classes).get(name)
        flow = flow_channels(self.classes).get(name)
        method = getattr(spec, "separate", "components")
        h = getattr(spec, "split_depth", 2.0)
        seeds = getattr(spec, "seed_threshold", 0.5)
        resampled = self.raw.shape[1:] != self.image_shape
        if resampled and grid == "network" and isinstance(spec, ClassSpec):
            net = _cleaned(above(self.raw[self._index(name)], spec.threshold), spec, spec.min_size)
            labels = instances(
                net,
                min_size=spec.min_size,
                method=method,
                h=h,
                boundary=None if border is None else self.raw[border],
                distance=None if dist is None else self.raw[dist],
                seed_threshold=seeds,
                flow=None if flow is None else self.raw[flow[0] : flow[1] + 1],
                flow_steps=self._flow_steps(),
            )
            return transfer_labels(labels, m, min_size=self._min_size(spec))
        return instances(
            m,
            min_size=self._min_size(spec),
            method=method,
            h=h * float(np.sqrt(self.scale)),
            boundary=None if border is None else self.probability(border),
            distance=None if dist is None else self.probability(dist),
            seed_threshold=seeds,
            flow=None if flow is None else np.stack([self.probability(c) for c in flow]),
            flow_steps=int(np.ceil(self._flow_steps() * np.sqrt(self.scale))),
        )

    def _flow_steps(self) -> int:
        """Steps along a flow on the network's grid: three training diameters (a long cell's
        tip is about that far from its centre), 200 when the model has no scale."""
        return int(3 * self.diameter) if self.diameter else 200


def seeded_classes(
    classes: tuple[ClassSpec, ...], seeds: Mapping[str, float]
) -> tuple[ClassSpec, ...]:
    """``classes`` with the seed thresholds of ``seeds`` (``{class: threshold}``).

    Raises ValueError, saying which classes take one, for a class that is not among
    ``classes``, one that is not separated by a distance map, or a value outside 0-1.
    """
    from dataclasses import replace

    takes = [c.name for c in classes if c.separate == "distance"]
    hint = (
        f"splitting applies to {', '.join(takes)}"
        if takes
        else "this model separates no class by a distance map, so splitting does not apply"
    )
    by_name = {c.name: c for c in classes}
    for name, t in seeds.items():
        if name not in by_name or by_name[name].separate != "distance":
            raise ValueError(f"no splitting for {name!r}: {hint}")
        if not 0.0 < float(t) < 1.0:
            raise ValueError(
                f"splitting of {name!r} is {t}; give a value between 0 and 1, e.g. 0.5"
            )
    return tuple(
        replace(c, seed_threshold=float(seeds[c.name])) if c.name in seeds else c for c in classes
    )


def _cleaned(above: np.ndarray, spec: ClassSpec, min_size: int) -> np.ndarray:
    """A class's thresholded probability, its holes filled and small parts dropped as its
    spec says (``min_size`` in the pixels of the grid ``above`` is on)."""
    return binary_mask(
        above,
        threshold=0.5,
        fill_holes=spec.fill_holes,
        min_size=min_size,
        largest_only=spec.largest_only,
    )
