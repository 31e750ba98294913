"""Training recipes: a YAML file becomes a model config, optimisation settings and data.

A recipe (``configs/*.yaml``) names the model (architecture, classes, input,
tiling, scale: a :class:`~..bundle_config.BundleConfig`), its data and their split
into **train / val / test**, and the optimisation (a :class:`TrainConfig`).
Validation images pick the kept weights (early stopping) and the
post-processing; test images are never seen by any choice and give the
figures of the model card (``cultureseg evaluate --split test``).

Fine-tuning on a user's corrections has its own recipe,
:func:`finetune_config`, and keeps its parent's loss (:func:`with_parent_loss`).

About 400 lines: the YAML schema (model, data entries, split, training) is read
and checked in one place, so a recipe's every key has one reader.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..bundle_config import BundleConfig, ClassSpec, DerivedClass, ScaleSpec, safe_name
from ..bundles import bundled_dir, user_models_dir
from ..datasets import Sample, load_folder, split
from ..device import resolve_device
from ..model_input import InputSpec
from ..patches import scale_zooms
from .config import Report, TrainConfig
from .loop import run_training


@dataclass
class Recipe:
    """A training recipe read from YAML, with its data loaded."""

    model: BundleConfig
    training: TrainConfig
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    yaml: dict = field(default_factory=dict)


def finetune_config(**overrides) -> TrainConfig:
    """The :class:`TrainConfig` of a fine-tuning run on user corrections.

    What the Fine-tune widget (and ``benchmarks/hitl.py``) use: learning rate
    3e-4, batch 4, patches of 256, a cosine schedule without warm-up, no early
    stop, the parent's BatchNorm statistics kept (batches from a field or two
    are not the data they were learnt on), the parent kept if it scores better
    on the held-out corrected pixels, and all CPU cores but one (the GUI's).
    ``overrides`` set any field.
    """
    base = dict(
        lr=3e-4,
        batch_size=4,
        patch_size=256,
        schedule="cosine",
        warmup=0.0,
        early_stop_patience=None,
        freeze_norm=True,
        keep_parent_if_better=True,
        threads=max(1, (os.cpu_count() or 1) - 1),
        data_description="user corrections (napari)",
    )
    return TrainConfig(**{**base, **overrides})


LOSS_FIELDS = (
    "class_weighting",
    "weight_clip",
    "fg_weight_factor",
    "dice_weight",
    "adversarial",
    "adversarial_lambda",
    "adversarial_lambda_steps",
    "disc_lr",
    "disc_params",
)
"""What a fine-tuning run keeps of its parent's training recipe (see :func:`with_parent_loss`)."""


def with_parent_loss(parent, config: TrainConfig) -> TrainConfig:
    """``config`` with the loss its parent was trained with (from the parent's lineage).

    A model trained with unweighted BCE + Dice and fine-tuned with
    class-weighted BCE learns shifted probabilities (measured: nucleus object
    F1 0.75 → 0.34 after 60 s on one field); fine-tuning must not change
    the objective. Parents without a recorded recipe keep ``config``'s.
    """
    recorded = parent.config.lineage.get("training", {})
    kw = {
        k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in LOSS_FIELDS
    }
    return replace(config, **kw)


def model_config(y: dict) -> BundleConfig:
    """The :class:`BundleConfig` of a new model described by a recipe's YAML mapping."""
    classes = tuple(ClassSpec(**c) for c in y["classes"])
    derived = tuple(
        DerivedClass(**{**d, "minus": tuple(d.get("minus", ()))}) for d in y.get("derived", ())
    )
    section = dict(y.get("input") or {})
    section.pop("histogram_match", None)  # a training step, not part of the model's input
    cfg = BundleConfig(
        name=safe_name(str(y["name"]), what="model name"),
        architecture=y.get("architecture", "unet"),
        classes=classes,
        params=dict(y.get("params", {})),
        input=InputSpec.from_dict(section),
        derived=derived,
        tile=int(y.get("tile", 512)),
        overlap=float(y.get("overlap", 0.25)),
        modality=y.get("modality", ""),
        description=y.get("description", ""),
        tta=int(y.get("tta", 1)),
    )
    cfg.check()
    return cfg


def train_config(y: dict, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of a recipe's ``training`` section."""
    t = dict(y.get("training", {}))
    for key in ("weight_clip", "betas", "adversarial_lambda", "choose_seeds"):
        if key in t:
            t[key] = tuple(t[key])
    return TrainConfig(**{**t, **overrides})


def split3(
    samples, test_fraction: float, val_fraction: float, seed: int, by: str
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """``(train, val, test)``: the test images first, then validation from the rest.

    ``by``: ``random``, ``group`` (whole experiments) or ``stratified`` (every
    experiment in proportion), as :func:`datasets.split`. ``val_fraction`` is
    a share of all samples, not of what the test split leaves.
    """
    if by not in ("random", "group", "stratified"):
        raise ValueError(f"split by must be random, group or stratified, not {by!r}")
    kw = {"by_group": by == "group", "stratify": by == "stratified"}
    rest, test = (
        split(samples, test_fraction, seed, **kw)
        if test_fraction
        else (sorted(samples, key=lambda s: s.name), [])
    )
    share = val_fraction / (1.0 - test_fraction) if test_fraction else val_fraction
    train, val = split(rest, min(share, 0.9), seed + 1 if test_fraction else seed, **kw)
    return train, val, test


def prepare_from_config(
    path: str | Path,
    *,
    data_root: str | Path | None = None,
    exclude_groups: set[str] | frozenset[str] = frozenset(),
) -> Recipe:
    """Read a training YAML (see :func:`train_from_config`) and load its data.

    ``exclude_groups`` keeps whole experiments (see :func:`datasets.experiment_of`)
    out of training, validation and test, e.g. to measure how a model does on
    an experiment it never saw (``benchmarks/loeo.py``).

    A ``data:`` entry is a folder (``folder: phase_usiigaci``, optional
    ``max_side``) or synthetic images (see :mod:`..synth.data`)::

        - synthetic: culture      # culture | spheroid-easy | spheroid-hard
          seeds: [0, 24]          # range(0, 24); 1000-1999 are reserved for tests
          shape: [1040, 1392]
          rgb: true               # default: true for culture, false for spheroids
          use: train              # train | val | test | split

    ``split:`` divides the ``use: split`` entries: ``test_fraction`` (default
    0), ``val_fraction``, ``seed``, ``by`` (random | group | stratified).

    ``scale: {reference: nucleus, diameter: 16, per: group}`` resamples every
    folder's images so that the median diameter of the reference class's
    objects is ``diameter`` px (measured per experiment, or per image), and
    records it in the model (:class:`~..bundle_config.ScaleSpec`); without
    ``diameter`` nothing is resampled and the measured median is recorded.

    ``input: {histogram_match: true}`` matches every image's histogram to the
    brightest training image (Aydın et al. 2022, :func:`patches.match_to_brightest`);
    the reference is stored in the bundle and applied to every image it segments.

    Raises
    ------
    ValueError
        A malformed data entry, an image in two of the splits, or a synthetic
        seed reserved for tests.
    """
    import yaml

    path = Path(path)
    y = yaml.safe_load(path.read_text())
    root = Path(
        data_root or os.environ.get("CULTURESEG_DATA") or path.parent / y.get("data_root", ".")
    )
    model = model_config(y)
    histogram_match = bool((y.get("input") or {}).get("histogram_match", False))
    sc = dict(y.get("scale") or {})
    unknown = set(sc) - {"reference", "diameter", "per", "estimator"}
    if unknown:
        raise ValueError(
            f"scale has unknown key(s) {sorted(unknown)}; "
            "it takes reference, diameter, per, estimator"
        )
    reference = sc.get("reference")
    if reference is not None and reference not in model.class_names:
        raise ValueError(
            f"scale reference {reference!r} is not a class of this model "
            f"({', '.join(model.class_names)})"
        )
    sp = dict(y.get("split", {}))
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    described = []
    for entry in y["data"]:
        samples, what = _load_data_entry(entry, root, model, reference, sc)
        samples = [s for s in samples if s.group not in exclude_groups]
        use = entry.get("use", "split")
        if use not in ("train", "val", "test", "split"):
            raise ValueError(
                f"data entry {what}: use must be train, val, test or split, not {use!r}"
            )
        described.append(f"{what} ({len(samples)} images, {use})")
        if use == "split":
            tr, va, te = split3(
                samples,
                float(sp.get("test_fraction", 0.0)),
                float(sp.get("val_fraction", 0.2)),
                int(sp.get("seed", 0)),
                sp.get("by", "random"),
            )
            parts["train"] += tr
            parts["val"] += va
            parts["test"] += te
        else:
            parts[use] += samples
    from ..synth.data import check_disjoint

    check_disjoint(parts["train"], parts["val"])
    check_disjoint(parts["train"] + parts["val"], parts["test"])
    if histogram_match:
        from ..patches import match_to_brightest

        train, val, spec = match_to_brightest(
            parts["train"], parts["val"] + parts["test"], model.input
        )
        n_val = len(parts["val"])
        parts.update(train=train, val=val[:n_val], test=val[n_val:])
        model = replace(model, input=spec)
        described.append("histograms matched to the brightest training image (Aydın et al. 2022)")
    if reference is not None:
        model = replace(
            model,
            scale=replace(
                _learnt_scale(parts["train"], model, reference, sc.get("diameter")),
                estimator=sc.get("estimator", "objects"),
            ),
        )
        model.check()
    config = train_config(y, data_description="; ".join(described))
    return Recipe(model, config, parts["train"], parts["val"], parts["test"], y)


def _learnt_scale(train: list[Sample], model: BundleConfig, reference: str, diameter) -> ScaleSpec:
    """The scale the model learns: median object diameters of its training data, as seen."""
    from ..scale import object_diameters

    diameters = {}
    for c, spec in enumerate(model.classes):
        if not spec.instances and spec.name != reference:
            continue
        d = [
            object_diameters(s.labels[c] if s.labels and c in s.labels else s.target[c] > 0)
            for s in train
            if s.valid[c].all()
        ]
        d = np.concatenate(d) if d else np.zeros(0)
        if d.size:
            diameters[spec.name] = round(float(np.median(d)), 2)
    measured = diameters.get(reference)
    return ScaleSpec(
        diameter=float(diameter) if diameter else measured, reference=reference, diameters=diameters
    )


def _load_data_entry(
    entry: dict, root: Path, model: BundleConfig, reference: str | None, sc: dict
) -> tuple[list[Sample], str]:
    """The samples of one ``data:`` entry of a training YAML, and a short description of it."""
    classes, spec = model.classes, model.input
    if "synthetic" in entry:
        from ..synth.data import seed_range, synthetic_samples

        known = {"synthetic", "seeds", "shape", "rgb", "density", "use"}
        if set(entry) - known:
            raise ValueError(
                f"synthetic data entry has unknown key(s) {sorted(set(entry) - known)}; "
                f"it takes {', '.join(sorted(known))}"
            )
        kind, seeds = entry["synthetic"], seed_range(entry.get("seeds"))
        shape = tuple(int(v) for v in entry.get("shape", (1040, 1392)))
        samples = synthetic_samples(
            kind,
            seeds,
            classes=classes,
            spec=spec,
            shape=shape,
            rgb=bool(entry.get("rgb", kind == "culture")),
            density=float(entry.get("density", 1.0)),
        )
        size = "x".join(map(str, shape))
        return samples, f"synthetic {kind} seeds {seeds.start}-{seeds.stop - 1} ({size})"
    if "folder" not in entry:
        raise ValueError(
            f"data entry {entry!r} needs either folder: <path> or synthetic: <kind> with seeds"
        )
    folder = root / entry["folder"]
    zooms = None
    what = str(entry["folder"])
    if reference is not None and sc.get("diameter"):
        zooms, _ = scale_zooms(folder, reference, float(sc["diameter"]), per=sc.get("per", "group"))
        z = np.array(list(zooms.values()) or [1.0])
        what += (
            f" (resampled x{z.min():.2f}-{z.max():.2f} to {reference} diameter {sc['diameter']} px)"
        )
    samples = load_folder(folder, classes, spec, max_side=entry.get("max_side"), zoom=zooms)
    return samples, what


def train_from_config(
    path: str | Path,
    *,
    out_dir: str | Path | None = None,
    on_report: Callable[[Report], None] | None = None,
    data_root: str | Path | None = None,
    threads: int | None = None,
) -> Path:
    """Train a model from scratch as described by a YAML file and save its bundle.

    Parameters
    ----------
    path
        The YAML recipe (see ``configs/*.yaml``): ``name``, ``bundle``,
        ``architecture``/``params``, ``classes``, ``derived``, ``input``,
        ``tile``/``overlap``, ``scale``, ``data`` (folders relative to
        ``data_root``, each ``use: split | train | val | test``), ``split``
        (``test_fraction``, ``val_fraction``, ``seed``, ``by: random | group |
        stratified``), ``training`` (:class:`TrainConfig` fields) and ``card``
        (source, licence, attribution).
    out_dir
        Folder to save the bundle in; default the package's bundled models
        when the YAML says ``bundle: true``, else the user models folder.
    on_report
        Called with every :class:`Report` (the CLI prints a progress bar).
    data_root
        Where the data folders are; default ``$CULTURESEG_DATA`` or the YAML's
        ``data_root`` relative to the YAML file.
    threads
        CPU threads for torch (default: the YAML's ``training.threads``, else all cores).

    Returns
    -------
    Path
        The saved bundle folder (weights stored as float16).
    """
    import platform

    path = Path(path)
    r = prepare_from_config(path, data_root=data_root)
    config = replace(r.training, threads=threads) if threads else r.training
    bundle = run_training(r.model, config, r.train, r.val, on_report=on_report)
    card = {
        **r.yaml.get("card", {}),
        "validation_ids": [s.name for s in r.val],
        "test_ids": [s.name for s in r.test],
        "config_file": path.name,
        "command": f"cultureseg train --config configs/{path.name}",
        "trained_on": f"{platform.machine()} CPU, {config.threads or os.cpu_count()} threads"
        if resolve_device(config.device) == "cpu"
        else resolve_device(config.device),
    }
    bundle = bundle.with_config(card=card, storage_dtype="float16")
    dest = (
        Path(out_dir) if out_dir else bundled_dir() if r.yaml.get("bundle") else user_models_dir()
    )
    return bundle.save(dest / r.model.name, overwrite=True)
