"""Model versions made by fine-tuning on a user's corrections, and the job that makes them.

A fine-tuned model is a new bundle in the user's model folder named after its
base model: ``phase-cells`` → ``phase-cells.v2`` → ``phase-cells.v3`` … Nothing
is ever overwritten, so every earlier version stays one click away.

:func:`fine_tune_job` is the Qt-free job behind the Fine-tune widget: it holds
out part of the reviewed pixels for validation, scores the parent on them,
fine-tunes (yielding every batch), and saves the new version.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .bundles import Bundle, list_bundles, user_models_dir
from .datasets import Sample

_VERSION = re.compile(r"^(?P<base>.+?)\.v(?P<n>\d+)$")


def finetune_config(**overrides):
    """The fine-tuning recipe (:func:`training.finetune_config`), importable from here too."""
    from .training import finetune_config as recipe

    return recipe(**overrides)


def with_parent_loss(parent: Bundle, config):
    """``config`` with its parent's loss (:func:`training.with_parent_loss`)."""
    from .training import with_parent_loss as keep

    return keep(parent, config)


def saved_sample(key: str, spec, classes, *, root: str | Path | None = None) -> Sample:
    """A training :class:`Sample` from a saved workspace whose image is not open.

    The image is read again from the file the workspace was made from (the
    plane given by the key's ``-p<i>`` suffixes, see
    ``_widgets._corrections.workspace_key``); target = its masks, valid = its
    reviewed pixels.

    Raises
    ------
    WorkspaceError
        The workspace came from an in-memory image, or its image file is gone
        or changed (the message says to open the image in napari instead).
    """
    from .images import ImageError, as_plane, read_array
    from .model_input import to_model_input
    from .workspace import Workspace
    from .workspace_files import WorkspaceError

    ws = Workspace.open(key, root=root)
    what = f"saved workspace {key} ({ws.image_name})"
    if not ws.image_path:
        raise WorkspaceError(
            f"{what} was made from an image without a file: open that image "
            "in napari to learn from its corrections"
        )
    try:
        data = read_array(ws.image_path)
        index = tuple(int(i) for i in re.findall(r"-p(\d+)", key))
        plane = as_plane(np.asarray(data[index]) if index else data, source=ws.image_path)
    except (ImageError, IndexError) as exc:
        raise WorkspaceError(
            f"{what}: its image cannot be read again ({exc}); open the image "
            "in napari to learn from its corrections"
        ) from exc
    if plane.shape[:2] != ws.shape:
        raise WorkspaceError(
            f"{what}: the image is now {plane.shape[:2]}, the workspace "
            f"{ws.shape}; the file changed since it was corrected"
        )
    return ws.samples(to_model_input(plane, spec), classes=classes)


def base_name(name: str) -> str:
    """``phase-cells.v3`` → ``phase-cells``; a base name is returned unchanged."""
    m = _VERSION.match(name)
    return m.group("base") if m else name


def versions_of(name: str) -> list[str]:
    """The base model and all its installed versions, oldest first."""
    base = base_name(name)
    found = [n for n in list_bundles() if base_name(n) == base]
    return sorted(
        found, key=lambda n: int(_VERSION.match(n).group("n")) if _VERSION.match(n) else 1
    )


def next_version_name(name: str) -> str:
    """The first free ``<base>.v<N>`` (N ≥ 2) for a model and its versions."""
    base = base_name(name)
    taken = {
        int(m.group("n")) for n in list_bundles() if (m := _VERSION.match(n)) and m["base"] == base
    }
    taken |= {
        int(m.group("n"))
        for p in user_models_dir().glob(f"{base}.v*")
        if (m := _VERSION.match(p.name))
    }
    return f"{base}.v{max(taken | {1}) + 1}"


def split_reviewed(
    sample: Sample, *, fraction: float = 0.2, block: int = 64, seed: int = 0
) -> tuple[Sample, Sample]:
    """Hold out a random ``fraction`` of ``block``×``block`` squares of the reviewed pixels.

    The training sample keeps the other squares' reviewed pixels valid, the
    validation sample only the held-out ones, so the new version is scored on
    corrections it never trained on. Squares (not single pixels) keep
    neighbouring, nearly identical pixels on the same side.
    """
    h, w = sample.shape
    rng = np.random.default_rng(seed)
    grid = rng.random((-(-h // block), -(-w // block))) < fraction
    held = np.kron(grid, np.ones((block, block), bool))[:h, :w]
    train = replace(sample, valid=sample.valid & ~held)
    val = replace(sample, valid=sample.valid & held)
    return train, val


@dataclass(frozen=True)
class JobResult:
    """What a fine-tuning job made."""

    path: Path | None
    """The saved version, or None when no version was saved: the fine-tuned weights did not
    beat the parent on the held-out corrected pixels (``parent`` is kept)."""
    name: str
    parent_dice: dict[str, float]
    """Validation Dice of the parent on the same held-out pixels."""
    dice: dict[str, float]
    """Validation Dice of the new version."""
    steps: int
    seconds: float
    parent: str = ""
    """The model fine-tuned."""
    splitting: dict[str, float] = field(default_factory=dict)
    """The user's splitting that the saved version keeps as its own seed thresholds."""


def at_training_scale(parent: Bundle, samples: Sequence[Sample]) -> list[Sample]:
    """Corrections resampled so that their objects have the size ``parent`` learnt.

    The zoom of each sample comes from its own mask of the model's reference
    class (:func:`scale.zoom_from_mask`). Distance channels are resampled as
    values, zeroed outside their class's resampled mask; thresholding them
    like masks (as this did before 2026-12-03) taught the network a flat
    plateau instead of a distance wherever a correction was zoomed.
    """
    sc = parent.config.scale
    names = parent.config.class_names
    if not (sc.diameter and sc.reference in names):
        return list(samples)
    from .bundle_config import value_channels
    from .patches import zoom_sample
    from .scale import zoom_from_mask

    k = names.index(sc.reference)
    soft = value_channels(parent.config.classes)
    return [zoom_sample(s, zoom_from_mask(parent, s.target[k] > 0), soft) for s in samples]


def fine_tune_job(
    parent: Bundle,
    parent_name: str,
    samples: Sequence[Sample],
    config,
    *,
    preview: Callable | None = None,
    preview_every: int = 0,
    holdout: float = 0.2,
    splitting: Mapping[str, float] | None = None,
) -> Generator:
    """Fine-tune ``parent`` on reviewed corrections and save the result as a new version.

    ``splitting`` (``{class: seed threshold}``): the levels at which the user cut the
    parent's objects (the Segment dock's *splitting*); the new version keeps them as its
    own, so it cuts objects as the user was working with, in napari and in the CLI.
    Checked before any training (ValueError for a class that takes none).

    Yields the engine's reports (see :func:`training.fine_tune`; send
    ``"stop"`` to end the run after the current batch and keep the best
    weights so far). Returns a :class:`JobResult`.
    """
    from .segmentation import seeded_classes
    from .training import fine_tune, validate

    seeded_classes(parent.config.classes, splitting or {})  # refused before any training
    samples = [s for s in samples if s.valid.any()]
    if not samples:
        raise ValueError("no reviewed pixels to learn from: correct or accept some masks first")
    samples = at_training_scale(parent, samples)
    pairs = [split_reviewed(s, fraction=holdout, seed=i) for i, s in enumerate(samples)]
    train = [t for t, _ in pairs if t.valid.any()]
    val = [v for _, v in pairs if v.valid.any()]
    if not train:
        raise ValueError("too few reviewed pixels: review a larger region before fine-tuning")
    from .bundle_config import safe_name

    name = safe_name(next_version_name(parent_name), what="model version name")
    config = with_parent_loss(parent, config)
    net = parent.build()
    parent_dice, _ = (
        validate(net, val, parent.config, tile=parent.config.tile, device="cpu")
        if val
        else ({}, {})
    )
    gen = fine_tune(parent, train, val, config, preview=preview, preview_every=preview_every)
    command = None
    try:
        while True:
            command = yield gen.send(command)
    except StopIteration as stop:
        new: Bundle = stop.value
    lin = dict(new.config.lineage)
    lin["parent"] = parent_name
    lin.setdefault("metrics", {})["parent_val_dice"] = parent_dice
    dice = lin["metrics"].get("val_dice", {})
    kept = lin.get("best_step") == 0 or (
        parent_dice and dice and np.mean(list(dice.values())) <= np.mean(list(parent_dice.values()))
    )
    if kept:  # never hand back (or select) a version that is no better than its parent
        return JobResult(
            None,
            parent_name,
            parent_dice,
            dice,
            lin.get("steps", 0),
            lin.get("seconds", 0.0),
            parent_name,
        )
    kept = {k: float(v) for k, v in (splitting or {}).items()}
    if kept:
        lin["splitting"] = kept
    classes = seeded_classes(new.config.classes, kept)
    new = new.with_config(lineage=lin, name=name, classes=classes)
    path = new.save(user_models_dir() / name)
    return JobResult(
        path,
        name,
        parent_dice,
        lin["metrics"].get("val_dice", {}),
        lin.get("steps", 0),
        lin.get("seconds", 0.0),
        parent_name,
        kept,
    )
