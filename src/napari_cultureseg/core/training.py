"""Training and fine-tuning as a plain generator.

::

    gen = fine_tune(bundle_or_None, train, val, TrainConfig(steps=2000))
    for report in gen:          # one Report per batch; gen.close() stops at once
        ...                     # report.val_dice every `val_every` steps
    # the new Bundle is the generator's return value (see tiling.run_to_end)

The loss is a *masked* multilabel BCE-with-logits: each class has its own
sigmoid (classes may overlap), and a pixel whose ``valid`` is False for class
k (not annotated, not reviewed) adds nothing to the loss of class k. With
class weighting, positive pixels of class k weigh

    W_fg(k) = clip(N_bg(k) / N_fg(k), lo, hi),   W_bg = 1,

counted per batch over the valid pixels of class k: the dynamic foreground
weight of seed 003 (eq. 1, with W_bg = 1) and the per-batch class-frequency
weighting r_{l,K} of seed 000 (eq. 2), clipped so that a batch with a
handful of positive pixels cannot blow the gradient up. Each class's loss is
the weighted mean over its valid pixels; the batch loss is the mean over
classes that have any valid pixel (zero if none).

torch is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bundles import Bundle, BundleConfig, ClassSpec, DerivedClass, bundled_dir, user_models_dir
from .datasets import PatchSampler, Sample, load_folder, split
from .images import InputSpec
from .models import output_stride, resolve_device
from .tiling import predict_tiled, run_to_end


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data (read once, on the GUI thread)."""

    name: str = "fine-tuned"
    """Name of the new bundle."""
    steps: int = 500
    batch_size: int = 4
    patch_size: int = 256
    """Side of the training patches; a multiple of 32."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 1e-4
    """Decoupled L2 penalty on the weights (AdamW; seed 000 used L2 with λ = 0.001)."""
    schedule: str = "onecycle"
    """``onecycle`` (linear warm-up then cosine to 1 % of ``lr``), ``cosine`` or ``constant``;
    see :func:`lr_factor`. With ``max_seconds`` the run's progress is the larger of
    the step and time fractions."""
    warmup: float = 0.05
    """Fraction of the steps spent warming up (``onecycle``)."""
    seed: int = 0
    val_every: int = 100
    early_stop_patience: int | None = 10
    """Stop after this many validations without a better mean Dice (None: never)."""
    class_weighting: bool = True
    weight_clip: tuple[float, float] = (1.0, 50.0)
    dice_weight: float = 0.0
    """Weight of an added soft-Dice term (0: BCE only)."""
    positive_fraction: float = 0.5
    negative_fraction: float = 0.25
    augment: bool = True
    threads: int | None = None
    """CPU threads for torch (None: all cores); restored when training ends."""
    device: str = "auto"
    max_seconds: float | None = None
    """Time budget in seconds: training stops cleanly (after a last validation) once
    exceeded, and the learning-rate schedule is stretched over it (see ``schedule``)."""
    val_tile: int | None = None
    """Tile for validation (None: the bundle's tile, capped at the image size)."""
    val_batch_size: int = 4
    data_description: str = ""
    # ---- for training from scratch (ignored when a parent bundle is given)
    architecture: str = "unet"
    params: dict = field(default_factory=dict)
    classes: tuple[ClassSpec, ...] = ()
    derived: tuple[DerivedClass, ...] = ()
    input: InputSpec = InputSpec()
    tile: int = 512
    overlap: float = 0.25
    modality: str = "phase contrast"
    description: str = ""


@dataclass(frozen=True)
class Report:
    """Progress after one batch; ``val_dice`` only at validation steps."""

    step: int
    total_steps: int
    loss: float
    lr: float
    seconds: float
    val_dice: dict[str, float] | None = None
    best: bool = False
    """This validation is the best so far (its weights are the ones returned)."""
    preview: object = None
    """What ``preview(net)`` returned at this step (every ``preview_every`` steps), else None."""

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 1.0


def masked_loss(
    logits,
    target,
    valid,
    *,
    class_weighting: bool = True,
    weight_clip: tuple[float, float] = (1.0, 50.0),
    dice_weight: float = 0.0,
):
    """Masked multilabel BCE-with-logits (plus optional soft Dice) of a batch.

    Parameters
    ----------
    logits
        ``(B, K, H, W)`` float tensor.
    target, valid
        ``(B, K, H, W)`` tensors: 0/1 targets and where they are known.
    class_weighting
        Weight positive pixels of class k by ``clip(N_bg / N_fg)`` (module docstring).
    weight_clip
        Bounds of that weight.
    dice_weight
        Weight of ``1 − soft Dice`` over the valid pixels, per class.

    Returns
    -------
    torch.Tensor
        A scalar; zero (still differentiable) when no pixel is valid.
    """
    import torch
    import torch.nn.functional as F

    t = target.float()
    v = valid.float()
    t = t * v  # whatever lies behind valid=False must not reach any sum below
    dims = (0, 2, 3)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    n_valid = v.sum(dims)
    if class_weighting:
        n_fg = t.sum(dims)
        w_fg = torch.where(n_fg > 0, (n_valid - n_fg) / n_fg.clamp(min=1), torch.ones_like(n_fg))
        w = v * (1 + (w_fg.clamp(*weight_clip).view(1, -1, 1, 1) - 1) * t)
    else:
        w = v
    has = n_valid > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    per_class = (w * bce).sum(dims) / w.sum(dims).clamp(min=1e-12)
    loss = per_class[has].mean()
    if dice_weight:
        p = torch.sigmoid(logits) * v
        dice = 1 - (2 * (p * t).sum(dims) + 1) / (p.sum(dims) + t.sum(dims) + 1)
        loss = loss + dice_weight * dice[has].mean()
    return loss


def lr_factor(progress: float, schedule: str = "onecycle", warmup: float = 0.05) -> float:
    """Learning-rate multiplier at ``progress`` ∈ [0, 1] of the run.

    ``onecycle``: linear warm-up over the first ``warmup`` of the run, then a
    cosine from 1 down to 0.01; ``cosine``: the cosine alone; ``constant``: 1.
    """
    if schedule == "constant":
        return 1.0
    if schedule not in ("onecycle", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; use onecycle, cosine or constant")
    w = warmup if schedule == "onecycle" else 0.0
    if progress < w:
        return max(progress / w, 0.01)
    rest = min(1.0, (progress - w) / max(1e-12, 1.0 - w))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * rest))


def _base_config(bundle: Bundle | None, config: TrainConfig) -> BundleConfig:
    if bundle is not None:
        card = {k: v for k, v in bundle.config.card.items() if k != "validation_ids"}
        return replace(bundle.config, name=config.name, lineage={}, card=card)
    if not config.classes:
        raise ValueError("training from scratch needs TrainConfig.classes (and architecture)")
    return BundleConfig(
        name=config.name,
        architecture=config.architecture,
        classes=tuple(config.classes),
        params=dict(config.params),
        input=config.input,
        derived=tuple(config.derived),
        tile=config.tile,
        overlap=config.overlap,
        modality=config.modality,
        description=config.description,
    )


def _check(samples: Sequence[Sample], cfg: BundleConfig, what: str) -> None:
    k, c = cfg.n_outputs, cfg.input.channels
    for s in samples:
        if s.target.shape[0] != k or s.image.shape[0] != c:
            raise ValueError(
                f"{what} sample {s.name!r} has {s.image.shape[0]} channel(s) and "
                f"{s.target.shape[0]} class(es); model {cfg.name!r} takes {c} channel(s) and "
                f"predicts {k} channel(s) ({', '.join(cfg.class_names)}"
                f"{', + borders' if k > len(cfg.classes) else ''}). Load the samples with the "
                "model's classes (ClassSpecs, so border channels are added) and input spec."
            )


def validate(
    net, val: Sequence[Sample], cfg: BundleConfig, *, tile: int, device: str, batch_size: int = 4
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-class Dice of ``net`` on full validation images, over valid pixels only.

    Returns ``(pooled, per_image)``: Dice from intersections and sizes summed
    over all images, and the mean of per-image Dice (images where a class has
    no valid pixel are left out of that class; empty truth and empty
    prediction count as 1). Classes valid nowhere are absent from both.
    """
    import torch

    net.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(net(torch.from_numpy(batch).to(device))).cpu().numpy()

    stride = output_stride(cfg.architecture, cfg.params)
    k = len(cfg.classes)
    sums = np.zeros((3, k))  # intersection, predicted, true
    per_image: list[list[float]] = [[] for _ in range(k)]
    for s in val:
        t = min(tile, -(-max(s.shape) // stride) * stride)  # no need to pad a small image to a big tile
        prob = run_to_end(
            predict_tiled(s.image, predict, tile=t, overlap=cfg.overlap, batch_size=batch_size,
                          align=stride)
        )
        for c, spec in enumerate(cfg.classes):
            v = s.valid[c]
            if not v.any():
                continue
            m, truth = (prob[c] > spec.threshold) & v, (s.target[c] > 0) & v
            i, p, q = np.count_nonzero(m & truth), np.count_nonzero(m), np.count_nonzero(truth)
            sums[:, c] += (i, p, q)
            per_image[c].append(2 * i / (p + q) if p + q else 1.0)
    pooled, mean = {}, {}
    for c, spec in enumerate(cfg.classes):
        if per_image[c]:
            i, p, q = sums[:, c]
            pooled[spec.name] = float(2 * i / (p + q)) if p + q else 1.0
            mean[spec.name] = float(np.mean(per_image[c]))
    return pooled, mean


def fine_tune(
    bundle: Bundle | None,
    train: Sequence[Sample],
    val: Sequence[Sample],
    config: TrainConfig = TrainConfig(),
    *,
    preview: Callable | None = None,
    preview_every: int = 0,
) -> Generator[Report, str | None, Bundle]:
    """Train ``bundle`` (or a new model from ``config``) on ``train``, yielding after every batch.

    Parameters
    ----------
    bundle
        The parent model to fine-tune, or None to train ``config.architecture``
        with ``config.classes`` from scratch.
    train, val
        Samples loaded with the model's classes and input spec. Without
        validation samples the last weights are returned and there is no
        early stopping.
    config
        Hyper-parameters; see :class:`TrainConfig`.
    preview, preview_every
        Every ``preview_every`` steps, ``preview(net)`` is called with the
        network in eval mode (e.g. to predict the region on screen) and its
        result is attached to that step's report.

    Yields
    ------
    Report
        After every batch; with per-class ``val_dice`` every ``val_every``
        steps and at the last step. Closing the generator stops training at
        once (nothing runs in the background); sending ``"stop"`` ends it
        after the current batch and returns the best weights so far.

    Returns
    -------
    Bundle
        The new model with the best validated weights and its lineage
        (parent, created, data, steps, seconds, best step, metrics).
    """
    import torch

    cfg = _base_config(bundle, config)
    if config.patch_size % 32:
        raise ValueError(f"patch_size must be a multiple of 32, got {config.patch_size}")
    if not train:
        raise ValueError("no training samples")
    _check(train, cfg, "training")
    _check(val, cfg, "validation")
    from .models import resolve_device

    device = resolve_device(config.device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    try:
        torch.manual_seed(config.seed)  # the fresh network's initial weights
        net = (bundle if bundle is not None else Bundle(cfg)).build().to(device).train()
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sampler = PatchSampler(
            train,
            config.patch_size,
            np.random.default_rng(config.seed),
            positive_fraction=config.positive_fraction,
            negative_fraction=config.negative_fraction,
            augment=config.augment,
        )
        val_tile = config.val_tile or cfg.tile
        start = time.perf_counter()
        best = {"score": -math.inf, "step": 0, "state": None, "dice": {}, "per_image": {}}
        history, since_best, stopped, step = [], 0, "steps", 0
        for step in range(1, config.steps + 1):
            # with a time budget the schedule follows whichever runs out first, steps or
            # seconds, so a slower (or busier) machine still anneals before it stops
            progress = (step - 1) / config.steps
            if config.max_seconds:
                progress = max(progress, (time.perf_counter() - start) / config.max_seconds)
            lr = config.lr * lr_factor(progress, config.schedule, config.warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            x, t, v = (torch.from_numpy(a).to(device) for a in sampler.batch(config.batch_size))
            loss = masked_loss(
                net(x),
                t,
                v,
                class_weighting=config.class_weighting,
                weight_clip=config.weight_clip,
                dice_weight=config.dice_weight,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"the loss became {loss_value} at step {step}; lower the learning rate"
                )
            elapsed = time.perf_counter() - start
            out_of_time = bool(config.max_seconds) and elapsed >= config.max_seconds
            dice, is_best = None, False
            if val and (step % config.val_every == 0 or step == config.steps or out_of_time):
                dice, per_image = validate(
                    net, val, cfg, tile=val_tile, device=device, batch_size=config.val_batch_size
                )
                net.train()
                score = float(np.mean(list(dice.values()))) if dice else 0.0
                history.append({"step": step, "val_dice": dice})
                if score > best["score"]:
                    is_best, since_best = True, 0
                    state = {k: w.detach().cpu().clone() for k, w in net.state_dict().items()}
                    best.update(score=score, step=step, state=state, dice=dice, per_image=per_image)
                else:
                    since_best += 1
            shown = None
            if preview is not None and preview_every and step % preview_every == 0:
                net.eval()
                shown = preview(net)
                net.train()
            elapsed = time.perf_counter() - start
            command = yield Report(step, config.steps, loss_value, lr, elapsed, dice, is_best, shown)
            if command == "stop":
                stopped = "user"
                break
            if out_of_time:
                stopped = "time"
                break
            if config.early_stop_patience and since_best >= config.early_stop_patience:
                stopped = "early_stop"
                break
        seconds = time.perf_counter() - start
        if best["state"] is None:  # no validation data: the last weights
            state = {k: w.detach().cpu().clone() for k, w in net.state_dict().items()}
            best.update(step=step, state=state)
    finally:
        torch.set_num_threads(threads_before)
    parent = None if bundle is None else str(bundle.path) if bundle.path else bundle.config.name
    lineage = {
        "parent": parent,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "description": config.data_description,
            "train": {"count": len(train), "names": [s.name for s in train]},
            "val": {"count": len(val), "names": [s.name for s in val]},
        },
        "steps": step,
        "seconds": round(seconds, 1),
        "best_step": best["step"],
        "stopped": stopped,
        "training": {
            k: getattr(config, k)
            for k in ("lr", "weight_decay", "schedule", "batch_size", "patch_size", "seed",
                      "class_weighting", "dice_weight", "augment", "steps", "val_every")
        },
        "metrics": {
            "val_dice": best["dice"],
            "val_dice_per_image_mean": best["per_image"],
            "history": history,
        },
    }
    return Bundle(replace(cfg, lineage=lineage), best["state"])


def prepare_from_config(
    path: str | Path,
    *,
    data_root: str | Path | None = None,
    exclude_groups: set[str] | frozenset[str] = frozenset(),
) -> tuple[TrainConfig, list[Sample], list[Sample], dict]:
    """Read a training YAML (see :func:`train_from_config`) and load its data.

    ``exclude_groups`` keeps whole experiments (see :func:`datasets.experiment_of`)
    out of both training and validation, e.g. to measure how a model does on
    an experiment it never saw.

    Returns
    -------
    (config, train, val, yaml_dict)
    """
    import yaml

    path = Path(path)
    y = yaml.safe_load(path.read_text())
    root = Path(
        data_root or os.environ.get("CULTURESEG_DATA") or path.parent / y.get("data_root", ".")
    )
    classes = tuple(ClassSpec(**c) for c in y["classes"])
    derived = tuple(
        DerivedClass(**{**d, "minus": tuple(d.get("minus", ()))}) for d in y.get("derived", ())
    )
    spec = InputSpec.from_dict(y.get("input"))
    sp = y.get("split", {})
    train: list[Sample] = []
    val: list[Sample] = []
    described = []
    for entry in y["data"]:
        samples = load_folder(root / entry["folder"], classes, spec, max_side=entry.get("max_side"))
        samples = [s for s in samples if s.group not in exclude_groups]
        use = entry.get("use", "split")
        described.append(f"{entry['folder']} ({len(samples)} images, {use})")
        if use == "train":
            train += samples
        elif use == "val":
            val += samples
        else:
            by = sp.get("by", "random")
            tr, va = split(
                samples,
                sp.get("val_fraction", 0.2),
                sp.get("seed", 0),
                by_group=by == "group",
                stratify=by == "stratified",
            )
            train, val = train + tr, val + va
    t = dict(y.get("training", {}))
    if "weight_clip" in t:
        t["weight_clip"] = tuple(t["weight_clip"])
    config = TrainConfig(
        name=y["name"],
        architecture=y.get("architecture", "unet"),
        params=dict(y.get("params", {})),
        classes=classes,
        derived=derived,
        input=spec,
        tile=int(y.get("tile", 512)),
        overlap=float(y.get("overlap", 0.25)),
        modality=y.get("modality", ""),
        description=y.get("description", ""),
        data_description="; ".join(described),
        **t,
    )
    return config, train, val, y


def run_training(
    config: TrainConfig,
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    parent: Bundle | None = None,
    on_report: Callable[[Report], None] | None = None,
) -> Bundle:
    """Run :func:`fine_tune` to the end, passing every report to ``on_report``."""
    gen = fine_tune(parent, train, val, config)
    while True:
        try:
            report = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_report is not None:
            on_report(report)


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
        The YAML config (see ``configs/*.yaml``): ``name``, ``bundle``,
        ``architecture``/``params``, ``classes``, ``derived``, ``input``,
        ``tile``/``overlap``, ``data`` (folders relative to ``data_root``, each
        ``use: split | train | val``), ``split`` (``val_fraction``, ``seed``,
        ``by: random | group | stratified``), ``training`` (:class:`TrainConfig`
        fields) and ``card`` (source, licence, attribution).
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
    path = Path(path)
    config, train, val, y = prepare_from_config(path, data_root=data_root)
    if threads:
        config = replace(config, threads=threads)
    bundle = run_training(config, train, val, on_report=on_report)
    import platform

    card = {**y.get("card", {}), "validation_ids": [s.name for s in val], "config_file": path.name,
            "command": f"cultureseg train --config configs/{path.name}",
            "trained_on": f"{platform.machine()} CPU, {config.threads or os.cpu_count()} threads"
            if resolve_device(config.device) == "cpu" else resolve_device(config.device)}
    bundle = bundle.with_config(card=card, storage_dtype="float16")
    dest = Path(out_dir) if out_dir else bundled_dir() if y.get("bundle") else user_models_dir()
    return bundle.save(dest / y["name"], overwrite=True)
