"""What a model bundle's ``config.json`` holds, checked: :class:`BundleConfig` with its
:class:`ClassSpec` per output class, :class:`ScaleSpec` and :class:`DerivedClass`, the
channel layout of a model's outputs, and safe names. The bundle folder, its weights and
finding installed bundles are in :mod:`.bundles`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from .model_input import InputSpec

FORMAT = "cultureseg-bundle/1"


class BundleError(ValueError):
    """A model bundle that cannot be found or loaded; the message says what to do."""


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def safe_name(name: str, *, what: str = "name") -> str:
    """``name`` if it can be a file or folder name part as it is, else a ValueError.

    Letters, digits, ``.``, ``_``, ``-`` and ``+``, starting with a letter or
    digit, at most 100 characters: no path separators, no ``..``, nothing a
    stranger's config could use to write outside the folder it belongs in.
    """
    if not isinstance(name, str) or not _SAFE.match(name) or ".." in name:
        raise ValueError(
            f"{what} {name!r} cannot be used: use letters, digits, '.', '_', '-' or '+' "
            "(starting with a letter or digit, at most 100 characters, no '..' or '/')"
        )
    return name


@dataclass(frozen=True)
class ClassSpec:
    """One output class: how it is shown and turned into a mask."""

    name: str
    colour: str = "#ff4040"
    threshold: float = 0.5
    fill_holes: bool = True
    min_size: int = 16
    """Objects smaller than this many pixels are removed (pixels at the network's
    resolution: for a model that resizes its input, see ``InputSpec.resize_to``)."""
    largest_only: bool = False
    """Keep only the largest object (Sadanandan et al. 2017: one spheroid per image)."""
    instances: bool = False
    """Whether objects of this class are counted (instance labels are written)."""
    separate: str = "components"
    """How touching objects become instances: ``components``, ``watershed``,
    ``boundary`` (the network predicts this class's object borders in an extra
    output channel), ``distance`` (the network predicts each object's distance
    to its outline, normalised to 1 at its centre, in an extra output channel)
    or ``flow`` (the network predicts, in two extra channels, the direction
    from each pixel towards its object's centre, as cellpose does; pixels that
    follow it to the same place are one object); see
    :attr:`BundleConfig.n_outputs` and :func:`postprocess.instances`."""
    split_depth: float = 2.0
    """For ``watershed``: h-maxima depth in pixels of distance (higher splits less)."""
    seed_threshold: float = 0.5
    """For ``distance``: an object's seed is where its predicted normalised distance
    reaches this value (lower merges more, higher splits more)."""
    description: str = ""


SEPARATE = ("components", "watershed", "boundary", "distance", "flow")
"""The ways touching objects of a class become instances (``ClassSpec.separate``)."""


def boundary_channels(classes) -> dict[str, int]:
    """``{class name: output channel}`` of the border channels, after the K class channels.

    A class whose ``separate`` is ``boundary`` gets one: the network learns the
    pixels where one object touches another or the background
    (:func:`targets.borders`), and instances are its cores (see
    :func:`postprocess.instances`). Names (str) have no border channel.
    """
    names = [c.name for c in classes if getattr(c, "separate", "") == "boundary"]
    return {n: len(classes) + j for j, n in enumerate(names)}


def distance_channels(classes) -> dict[str, int]:
    """``{class name: output channel}`` of the distance channels, after the border channels.

    A class whose ``separate`` is ``distance`` gets one: the network learns each
    object's distance to its own outline, divided by the object's largest
    distance (:func:`targets.distances`: 1 on the object's medial ridge, falling
    towards its outline and towards a touching neighbour, 0 outside). The values
    do not depend on the object's size, so they survive resampling and zoom.
    """
    start = len(classes) + len(boundary_channels(classes))
    names = [c.name for c in classes if getattr(c, "separate", "") == "distance"]
    return {n: start + j for j, n in enumerate(names)}


def flow_channels(classes) -> dict[str, tuple[int, int]]:
    """``{class name: (row channel, column channel)}`` of the flow channels, after the
    distance channels.

    A class whose ``separate`` is ``flow`` gets two: the network learns, at every
    pixel of an object, the unit vector of the way towards the object's centre
    along the object (:func:`targets.flows`, the representation of cellpose,
    Stringer et al. 2021), stored as ``(v + 1) / 2`` so that a sigmoid output
    holds it (0.5: no direction, as on background). A vector turns with the
    image: flips and rotations must turn these channels too
    (:func:`augment.turn_flows`).
    """
    start = len(classes) + len(boundary_channels(classes)) + len(distance_channels(classes))
    names = [c.name for c in classes if getattr(c, "separate", "") == "flow"]
    return {n: (start + 2 * j, start + 2 * j + 1) for j, n in enumerate(names)}


def soft_channels(classes) -> tuple[int, ...]:
    """Output channels whose targets are not 0/1 masks (distances, flows): no Dice, no
    class weights."""
    flows = [c for pair in flow_channels(classes).values() for c in pair]
    return (*distance_channels(classes).values(), *flows)


def value_channels(classes) -> dict[int, int | None]:
    """How soft channels are resampled: ``{channel: class channel whose background zeroes
    it}`` for distances, ``{channel: None}`` for flows (0.5, no direction, on background
    already; see :func:`augment.resample_patch`)."""
    names = [c.name for c in classes]
    out: dict[int, int | None] = {
        ch: names.index(n) for n, ch in distance_channels(classes).items()
    }
    for pair in flow_channels(classes).values():
        out.update(dict.fromkeys(pair))
    return out


ZOOM_LIMITS = (0.25, 4.0)
"""Zooms outside this range are refused: the image would lose its objects or explode."""

ESTIMATORS = ("objects", "all-objects", "coarse", "confidence")


def check_zoom(zoom: float, *, what: str = "the image") -> float:
    """``zoom`` as a float, refused (ValueError saying what to do) outside :data:`ZOOM_LIMITS`."""
    zoom = float(zoom)
    lo, hi = ZOOM_LIMITS
    if not np.isfinite(zoom) or not lo <= zoom <= hi:
        raise ValueError(
            f"resampling {what} by {zoom:.3g} is outside {lo}-{hi}; check the object diameter "
            "or pixel size you gave (the model's own is shown by `cultureseg models`), or "
            "give none to segment at the image's own scale"
        )
    return zoom


@dataclass(frozen=True)
class ScaleSpec:
    """The scale a model learnt: how big its objects were, in the pixels the network saw.

    ``segment`` resamples a new image by ``diameter / (the image's object
    diameter)`` before the network and maps the outputs back to the image's own
    grid (:mod:`.scale`), so the objects it sees have the size it learnt.
    """

    diameter: float | None = None
    """Median equivalent diameter (px) of the ``reference`` class's objects in the
    training data as the network saw them (None: unknown; images are not resampled)."""
    reference: str | None = None
    """The class whose objects define the scale (e.g. ``nucleus``)."""
    diameters: dict = field(default_factory=dict)
    """Median diameter (px, as the network saw them) of every counted class."""
    pixel_size: float | None = None
    """Micrometres per network pixel when the training data's pixel size was known."""
    estimator: str = "objects"
    """How ``diameter: auto`` measures a new image (:data:`ESTIMATORS`), chosen
    per model on its validation images (``benchmarks/scale.py``)."""
    bias: float = 1.0
    """How much larger (median diameter) the model draws the reference class's objects
    than the hand-drawn truth, at its own scale, on its validation images (measured at
    the end of training, :attr:`training.validation.Validation.sizes`). An estimate
    from the model's own objects would take the image's objects for that much larger
    than they are; it is divided by this."""

    @classmethod
    def from_dict(cls, d: dict | None) -> ScaleSpec:
        d = dict(d or {})
        return cls(
            diameter=float(d["diameter"]) if d.get("diameter") else None,
            reference=d.get("reference"),
            diameters={str(k): float(v) for k, v in (d.get("diameters") or {}).items()},
            pixel_size=float(d["pixel_size"]) if d.get("pixel_size") else None,
            estimator=str(d.get("estimator") or "objects"),
            bias=float(d["bias"]) if d.get("bias") is not None else 1.0,
        )


@dataclass(frozen=True)
class DerivedClass:
    """A class computed from others, e.g. cytoplasm = cell minus nucleus (MIDL 2019)."""

    name: str
    base: str
    minus: tuple[str, ...] = ()
    colour: str = "#ffd040"
    description: str = ""


@dataclass(frozen=True)
class BundleConfig:
    """Everything about a model except its weights (``config.json``)."""

    name: str
    architecture: str
    classes: tuple[ClassSpec, ...]
    params: dict = field(default_factory=dict)
    input: InputSpec = InputSpec()
    derived: tuple[DerivedClass, ...] = ()
    tile: int = 512
    overlap: float = 0.25
    modality: str = "phase contrast"
    description: str = ""
    scale: ScaleSpec = ScaleSpec()
    """The object size the network learnt (see :class:`ScaleSpec`)."""
    lineage: dict = field(default_factory=dict)
    """parent, created, data, steps, seconds, metrics of the training that made it."""
    card: dict = field(default_factory=dict)
    storage_dtype: str = "float32"
    tta: int = 1
    """Test-time augmentation copies the model runs with unless told otherwise (1, 2, 4
    or 8: :func:`segment.augmented`), set in its recipe where its validation images
    chose it (``fluorescence-nuclei``: 8); the Segment dock and the CLI can change it."""

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def n_outputs(self) -> int:
        """Output channels: one per class, then one border channel per ``boundary`` class,
        then one distance channel per ``distance`` class, then two flow channels per
        ``flow`` class."""
        return (
            len(self.classes)
            + len(boundary_channels(self.classes))
            + len(distance_channels(self.classes))
            + 2 * len(flow_channels(self.classes))
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input"] = self.input.to_dict()
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict) -> BundleConfig:
        d = dict(d)
        fmt = d.pop("format", None)
        if fmt != FORMAT:
            raise BundleError(f"config.json has format {fmt!r}, expected {FORMAT!r}")
        try:
            cfg = cls(
                **{
                    **d,
                    "classes": tuple(ClassSpec(**c) for c in d["classes"]),
                    "derived": tuple(
                        DerivedClass(**{**c, "minus": tuple(c.get("minus", ()))})
                        for c in d.get("derived", ())
                    ),
                    "input": InputSpec.from_dict(d.get("input")),
                    "scale": ScaleSpec.from_dict(d.get("scale")),
                }
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"config.json is not a valid bundle config: {exc}") from exc
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse a config that cannot be what it says, with one line saying which key is wrong.

        Names must be plain names (they become file names) and unique; the
        architecture must be a registered one, with only the parameters it takes,
        and an encoder named plainly (a hub reference such as
        ``tu-hf-hub:org/model`` would make the loader reach the internet);
        thresholds lie in [0, 1]; the tile is a positive multiple of the network's
        stride, at most 4096; the overlap in [0, 0.9]; percentiles low < high.

        Raises
        ------
        BundleError
        """
        try:
            self._check()
        except BundleError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise BundleError(f"config.json: {exc}") from None

    def _check(self) -> None:
        import math

        from .nets import architectures, output_stride, takes

        def bad(key: str, why: str):
            raise BundleError(f"config.json: {key} {why}")

        safe_name(self.name, what="model name")
        names = [*self.class_names, *(d.name for d in self.derived)]
        for n in names:
            safe_name(n, what="class name")
        if len(set(names)) != len(names) or not names:
            bad("classes", f"must have unique names and not be empty, got {names}")
        if self.architecture not in architectures():
            bad("architecture", f"{self.architecture!r} is not one of {', '.join(architectures())}")
        if not isinstance(self.params, dict):
            bad("params", "must be a mapping")
        unknown = set(self.params) - set(takes(self.architecture))
        if unknown:
            bad("params", f"has unknown key(s) {sorted(unknown)} for {self.architecture!r}")
        encoder = self.params.get("encoder")
        if encoder is not None and not re.fullmatch(r"(tu-)?[A-Za-z0-9_.]{1,64}", str(encoder)):
            bad(
                "params.encoder",
                f"{encoder!r} is not a plain encoder name: a model's weights "
                "come from its bundle only, never from a hub",
            )
        if self.tta not in (1, 2, 4, 8):
            bad("tta", f"must be 1, 2, 4 or 8 copies, not {self.tta!r}")
        for c in self.classes:
            key = f"classes[{c.name}]"
            for field_, lo, hi in (("threshold", 0.0, 1.0), ("seed_threshold", 0.0, 1.0)):
                v = getattr(c, field_)
                if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
                    bad(f"{key}.{field_}", f"must be a number in [{lo:g}, {hi:g}], not {v!r}")
            if not (isinstance(c.min_size, int) and 0 <= c.min_size <= 10**8):
                bad(f"{key}.min_size", f"must be a whole number of pixels >= 0, not {c.min_size!r}")
            if c.separate not in SEPARATE:
                bad(f"{key}.separate", f"{c.separate!r}: use one of {', '.join(SEPARATE)}")
            if not re.fullmatch(r"#[0-9A-Fa-f]{6}", str(c.colour)):
                bad(f"{key}.colour", f"{c.colour!r} is not a colour like #39ff14")
        for d in self.derived:
            for ref in (d.base, *d.minus):
                if ref not in self.class_names:
                    bad(f"derived[{d.name}]", f"refers to {ref!r}, which is not a class")
        stride = output_stride(self.architecture, self.params)
        if not (isinstance(self.tile, int) and 0 < self.tile <= 4096 and self.tile % stride == 0):
            bad("tile", f"must be a positive multiple of {stride} up to 4096, not {self.tile!r}")
        if not (isinstance(self.overlap, (int, float)) and 0.0 <= self.overlap <= 0.9):
            bad("overlap", f"must be in [0, 0.9], not {self.overlap!r}")
        inp = self.input
        if inp.channels not in (1, 3):
            bad("input.channels", f"must be 1 or 3, not {inp.channels!r}")
        norm = inp.normalisation
        if norm.kind not in ("percentile", "none"):
            bad("input.normalisation.kind", f"{norm.kind!r}: use percentile or none")
        if not 0.0 <= norm.low < norm.high <= 100.0:
            bad(
                "input.normalisation",
                f"percentiles must satisfy 0 <= low < high <= 100, got {norm.low}, {norm.high}",
            )
        if norm.flatten is not None and not 0 < norm.flatten <= 10000:
            bad("input.normalisation.flatten", f"must be a width in pixels, not {norm.flatten}")
        if inp.resize_to is not None and not 16 <= inp.resize_to <= 4096:
            bad("input.resize_to", f"must be 16-4096 pixels, not {inp.resize_to}")
        sc = self.scale
        if sc.diameter is not None and not (math.isfinite(sc.diameter) and sc.diameter > 0):
            bad("scale.diameter", f"must be a positive number of pixels, not {sc.diameter}")
        if sc.reference is not None and sc.reference not in self.class_names:
            bad("scale.reference", f"{sc.reference!r} is not a class")
        if sc.estimator not in ESTIMATORS:
            bad("scale.estimator", f"{sc.estimator!r} is not one of {', '.join(ESTIMATORS)}")
        if not (math.isfinite(sc.bias) and 0.25 <= sc.bias <= 4.0):
            bad("scale.bias", f"must be a ratio between 0.25 and 4, not {sc.bias}")
