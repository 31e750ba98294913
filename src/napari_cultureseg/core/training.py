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

    W_fg(k) = f · clip(N_bg(k) / N_fg(k), lo, hi),   W_bg = 1,

counted per batch over the valid pixels of class k: the dynamic foreground
weight of seed 003 (eq. 1, with W_bg = 1, and f = 3 to favour the
foreground) and the per-batch class-frequency weighting r_{l,K} of seed 000
(eq. 2, f = 1), clipped so that a batch with a handful of positive pixels
cannot blow the gradient up. Each class's loss is the weighted mean over its
valid pixels; the batch loss is the mean over classes that have any valid
pixel (zero if none).

With ``TrainConfig.adversarial`` (seed 003) a discriminator is trained
alternately with the model and adds a rising adversarial term to its loss;
see :mod:`.adversarial`.

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
from .images import InputSpec, fit_shape, resize_planes
from .models import output_stride, resolve_device
from .postprocess import binary_mask
from .segment import predict_whole
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
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decays (seed 003: (0.5, 0.99) for both networks)."""
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
    freeze_norm: bool = False
    """Keep the parent's normalisation statistics (BatchNorm layers stay in eval mode).
    For fine-tuning on a few images: batches drawn from one or two fields would
    otherwise replace the statistics the model learnt from all its data."""
    keep_parent_if_better: bool = False
    """With a parent and validation samples, score the parent first (step 0): if no
    later validation beats it, the parent's weights are returned. Fine-tuning then
    never hands back a model worse than its parent on the held-out pixels."""
    class_weighting: bool = True
    weight_clip: tuple[float, float] = (1.0, 50.0)
    fg_weight_factor: float = 1.0
    """Extra factor on the foreground weight of ``class_weighting`` (seed 003: 3)."""
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
    adversarial: bool = False
    """Train a discriminator alternately with the model and add its verdict to the loss
    (seed 003; see :mod:`.adversarial`). The discriminator is saved with the model."""
    adversarial_lambda: tuple[float, float] = (8.3e-6, 0.1)
    """Weight of the adversarial term, linear from the first to the second value (seed
    003's values) over ``adversarial_lambda_steps`` steps, or over the run's progress."""
    adversarial_lambda_steps: int | None = None
    """Steps over which λ rises (seed 003: 12 000 iterations, so 8.3e-6 more per step);
    None stretches the rise over this run's progress, however short it is."""
    disc_lr: float = 1e-3
    """The discriminator's (constant) Adam learning rate (seed 003); it uses ``betas``."""
    disc_params: dict = field(default_factory=dict)
    """``base``, ``depth`` of :func:`spheroid.make_discriminator` (default 8, 6: seed 003)."""
    per_class_batches: bool = True
    """``per-class-unets`` only: every step draws each class's network its own batch,
    centred on positives and negatives of that class, and that network learns its
    class alone from it (seed 000 trains one binary U-Net per class on sub-images
    with and without its class). False: all networks share one batch and one loss."""
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
    adversarial: dict | None = None
    """Adversarial runs: ``lambda``, the weighted ``generator`` term (added to ``loss``,
    which is the segmentation loss alone) and the ``discriminator`` loss."""

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
    fg_weight_factor: float = 1.0,
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
    fg_weight_factor
        Multiplies the clipped weight (seed 003: 3, "to force the network to
        learn more from the foreground regions").
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
        w_fg = fg_weight_factor * w_fg.clamp(*weight_clip)
        w = v * (1 + (w_fg.view(1, -1, 1, 1) - 1) * t)
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

    A model with ``InputSpec.resize_to`` is validated on the resized images. A
    ``largest_only`` class (one object per image) is scored after its
    post-processing, which removes everything but one object: its raw map
    would be judged on specks the model is not asked to avoid. Other classes
    are scored on the thresholded probabilities.
    Returns ``(pooled, per_image)``: Dice from intersections and sizes summed
    over all images, and the mean of per-image Dice (images where a class has
    no valid pixel are left out of that class; empty truth and empty
    prediction count as 1). Classes valid nowhere are absent from both.
    """
    import torch

    net.eval()
    if cfg.input.resize_to:  # the model sees whole images at this size (seed 003)
        val = resize_samples(val, cfg.input.resize_to)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(net(torch.from_numpy(batch).to(device))).cpu().numpy()

    stride = output_stride(cfg.architecture, cfg.params)
    k = len(cfg.classes)
    sums = np.zeros((3, k))  # intersection, predicted, true
    per_image: list[list[float]] = [[] for _ in range(k)]
    for s in val:
        # no need to pad a small image to a big tile
        t = min(tile, -(-max(s.shape) // stride) * stride)
        if cfg.input.resize_to:  # as segment() predicts: the whole image in one pass
            gen = predict_whole(s.image, predict, align=stride)
        else:
            gen = predict_tiled(s.image, predict, tile=t, overlap=cfg.overlap,
                                batch_size=batch_size, align=stride)
        prob = run_to_end(gen)
        for c, spec in enumerate(cfg.classes):
            v = s.valid[c]
            if not v.any():
                continue
            m = prob[c] > spec.threshold
            if getattr(spec, "largest_only", False):  # scored as seed 003 scores it: cleaned
                m = binary_mask(prob[c], threshold=spec.threshold, fill_holes=spec.fill_holes,
                                min_size=spec.min_size, largest_only=True)
            m, truth = m & v, (s.target[c] > 0) & v
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


def _train_mode(net, freeze_norm: bool):
    """``net.train()``, with BatchNorm layers left in eval mode when ``freeze_norm``."""
    import torch

    net.train()
    if freeze_norm:
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    return net


def _class_batch(net, c: int, sampler: PatchSampler, n: int, device):
    """Class ``c``'s network of a per-class ensemble (``models.per_class_unets``) on a
    batch drawn for class ``c``: its logit, target and valid, ``(n, 1, P, P)`` each."""
    import torch

    x, t, v = (torch.from_numpy(a).to(device) for a in sampler.batch(n, for_class=c))
    return net.class_logit(c, x), t[:, c : c + 1], v[:, c : c + 1]


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

    Notes
    -----
    A model whose input spec has ``resize_to`` (seed 003) learns from whole
    images at that size, as ``segment`` will show them to it: samples of
    another size are resized first (:func:`resize_samples`).

    With ``config.adversarial`` a discriminator (:class:`adversarial.Adversary`)
    is trained alternately with the model, one step each per batch, and
    ``λ · BCE(D(image, prediction), real)`` is added to the model's loss, ``λ``
    rising linearly over the run. The discriminator of the best validated
    step is returned with the model (``Bundle.aux["discriminator"]``).
    Fine-tuning such a bundle adversarially resumes that discriminator with
    ``λ`` held at its end value; without one, a fresh discriminator starts
    with ``λ`` near zero (see :mod:`.adversarial`).
    """
    import torch

    cfg = _base_config(bundle, config)
    if config.patch_size % 32:
        raise ValueError(f"patch_size must be a multiple of 32, got {config.patch_size}")
    if not train:
        raise ValueError("no training samples")
    _check(train, cfg, "training")
    _check(val, cfg, "validation")
    if cfg.input.resize_to:
        train = resize_samples(train, cfg.input.resize_to)
        val = resize_samples(val, cfg.input.resize_to)
    from .models import resolve_device

    device = resolve_device(config.device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    try:
        torch.manual_seed(config.seed)  # the fresh network's initial weights
        net = _train_mode((bundle if bundle is not None else Bundle(cfg)).build().to(device),
                          config.freeze_norm)
        opt = torch.optim.AdamW(
            net.parameters(), lr=config.lr, betas=tuple(config.betas),
            weight_decay=config.weight_decay,
        )
        adversary = None
        if config.adversarial:  # made after the model, so the model's initial weights stay the same
            from .adversarial import Adversary

            adversary = Adversary(
                cfg.input.channels, cfg.n_outputs, lr=config.disc_lr, betas=tuple(config.betas),
                lam=tuple(config.adversarial_lambda), device=device, **config.disc_params,
                state=None if bundle is None else bundle.aux.get("discriminator"),
                lambda_steps=config.adversarial_lambda_steps,
                step0=0 if bundle is None else
                int(bundle.config.lineage.get("adversarial", {}).get("lambda_step", 0)),
            )
        sampler = PatchSampler(
            train,
            config.patch_size,
            np.random.default_rng(config.seed),
            positive_fraction=config.positive_fraction,
            negative_fraction=config.negative_fraction,
            augment=config.augment,
        )
        per_class = config.per_class_batches and cfg.architecture == "per-class-unets"
        if per_class and adversary is not None:
            raise ValueError("adversarial training needs one prediction of all classes per batch; "
                             "set per_class_batches: false to train per-class-unets adversarially")

        def loss_of(logits, t, v):
            return masked_loss(
                logits, t, v, class_weighting=config.class_weighting,
                weight_clip=config.weight_clip, dice_weight=config.dice_weight,
                fg_weight_factor=config.fg_weight_factor,
            )

        val_tile = config.val_tile or cfg.tile
        start = time.perf_counter()
        best = {"score": -math.inf, "step": 0, "state": None, "dice": {}, "per_image": {},
                "disc": None if adversary is None or bundle is None
                else bundle.aux.get("discriminator")}
        history, since_best, stopped, step = [], 0, "steps", 0
        if config.keep_parent_if_better and bundle is not None and val:
            dice, per_image = validate(
                net, val, cfg, tile=val_tile, device=device, batch_size=config.val_batch_size
            )
            _train_mode(net, config.freeze_norm)
            state = {k: w.detach().cpu().clone() for k, w in net.state_dict().items()}
            best.update(score=float(np.mean(list(dice.values()))) if dice else 0.0, step=0,
                        state=state, dice=dice, per_image=per_image)
            history.append({"step": 0, "val_dice": dice})
            start = time.perf_counter()  # the parent's score is not training time
        for step in range(1, config.steps + 1):
            # with a time budget the schedule follows whichever runs out first, steps or
            # seconds, so a slower (or busier) machine still anneals before it stops
            progress = (step - 1) / config.steps
            if config.max_seconds:
                progress = max(progress, (time.perf_counter() - start) / config.max_seconds)
            lr = config.lr * lr_factor(progress, config.schedule, config.warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            if per_class:
                loss = torch.stack([
                    loss_of(*_class_batch(net, c, sampler, config.batch_size, device))
                    for c in range(len(net.nets))
                ]).mean()
            else:
                x, t, v = (torch.from_numpy(a).to(device) for a in sampler.batch(config.batch_size))
                logits = net(x)
                loss = loss_of(logits, t, v)
            total, adv = loss, None
            if adversary is not None:
                g, lam = adversary.generator_loss(x, logits, v, progress, step=step)
                total = loss + g
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if adversary is not None:  # then the discriminator, on the same (detached) prediction
                d = adversary.step(x, logits, t, v)
                adv = {"lambda": lam, "generator": float(g.detach()), "discriminator": d}
            loss_value = float(loss.detach())
            for what, value in (("loss", float(total.detach())),
                                ("discriminator's loss", adv["discriminator"] if adv else 0.0)):
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"the {what} became {value} at step {step}; lower the learning rate"
                    )
            elapsed = time.perf_counter() - start
            out_of_time = bool(config.max_seconds) and elapsed >= config.max_seconds
            dice, is_best = None, False
            if val and (step % config.val_every == 0 or step == config.steps or out_of_time):
                dice, per_image = validate(
                    net, val, cfg, tile=val_tile, device=device, batch_size=config.val_batch_size
                )
                _train_mode(net, config.freeze_norm)
                score = float(np.mean(list(dice.values()))) if dice else 0.0
                history.append({"step": step, "val_dice": dice})
                if score > best["score"]:
                    is_best, since_best = True, 0
                    state = {k: w.detach().cpu().clone() for k, w in net.state_dict().items()}
                    best.update(score=score, step=step, state=state, dice=dice, per_image=per_image)
                    if adversary is not None:
                        best["disc"] = adversary.state_dict()
                else:
                    since_best += 1
            shown = None
            if preview is not None and preview_every and step % preview_every == 0:
                net.eval()
                shown = preview(net)
                _train_mode(net, config.freeze_norm)
            elapsed = time.perf_counter() - start
            command = yield Report(
                step, config.steps, loss_value, lr, elapsed, dice, is_best, shown, adversarial=adv
            )
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
            if adversary is not None:
                best["disc"] = adversary.state_dict()
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
        **({"adversarial": adversary.lineage(step)} if adversary is not None else {}),
        "training": {  # as JSON will give it back (lists, not tuples), so configs compare equal
            k: list(v) if isinstance(v := getattr(config, k), tuple) else v
            for k in ("lr", "betas", "weight_decay", "schedule", "batch_size", "patch_size", "seed",
                      "class_weighting", "fg_weight_factor", "dice_weight", "augment", "steps",
                      "val_every", "adversarial")
            + (("adversarial_lambda", "adversarial_lambda_steps", "disc_lr", "disc_params")
               if config.adversarial else ())
            + (("per_class_batches",) if cfg.architecture == "per-class-unets" else ())
        },
        "metrics": {
            "val_dice": best["dice"],
            "val_dice_per_image_mean": best["per_image"],
            "history": history,
        },
    }
    aux = {"discriminator": best["disc"]} if adversary is not None and best["disc"] else {}
    return Bundle(replace(cfg, lineage=lineage), best["state"], aux=aux)


def resize_samples(samples: Sequence[Sample], size: int) -> list[Sample]:
    """Samples resized so that their longer side is ``size`` (``InputSpec.resize_to``).

    Images bilinearly with area averaging (as ``segment`` resizes them);
    targets by majority (area fraction ≥ 0.5); a resized pixel is valid only
    where all it covers was. Samples already at that size are kept as they
    are. A border channel (``separate: boundary``) is resized like a mask, so
    its 1-2 pixel borders thin out when shrunk: give such models samples at
    the network's size.
    """
    out = []
    for s in samples:
        shape = fit_shape(s.shape, size)
        if shape == tuple(s.shape):
            out.append(s)
            continue
        target = resize_planes(s.target.astype(np.float32), shape) >= 0.5
        valid = resize_planes(s.valid.astype(np.float32), shape) > 0.999
        out.append(Sample(s.name, resize_planes(s.image, shape), target.astype(np.uint8), valid,
                          s.group))
    return out


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

    A ``data:`` entry is a folder (``folder: phase_usiigaci``, optional
    ``max_side``) or synthetic images (see :mod:`.synth_data`)::

        - synthetic: culture      # culture | spheroid-easy | spheroid-hard
          seeds: [0, 24]          # range(0, 24); 1000-1999 are reserved for tests
          shape: [1040, 1392]
          rgb: true               # default: true for culture, false for spheroids
          use: train              # train | val | split

    ``input: {histogram_match: true}`` matches every image's histogram to the
    brightest training image (seed 004, :func:`datasets.match_to_brightest`);
    the reference is stored in the bundle and applied to every image it segments.

    Returns
    -------
    (config, train, val, yaml_dict)

    Raises
    ------
    ValueError
        A malformed data entry, an image in both training and validation, or
        a synthetic seed reserved for tests.
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
    input_section = dict(y.get("input") or {})
    # seed 004: match every image's histogram to the brightest training image's
    histogram_match = bool(input_section.pop("histogram_match", False))
    spec = InputSpec.from_dict(input_section)
    sp = y.get("split", {})
    train: list[Sample] = []
    val: list[Sample] = []
    described = []
    for entry in y["data"]:
        samples, what = _load_data_entry(entry, root, classes, spec)
        samples = [s for s in samples if s.group not in exclude_groups]
        use = entry.get("use", "split")
        if use not in ("train", "val", "split"):
            raise ValueError(f"data entry {what}: use must be train, val or split, not {use!r}")
        described.append(f"{what} ({len(samples)} images, {use})")
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
    from .synth_data import check_disjoint

    check_disjoint(train, val)
    if histogram_match:
        from .datasets import match_to_brightest

        train, val, spec = match_to_brightest(train, val, spec)
        described.append("histograms matched to the brightest training image (seed 004)")
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


def _load_data_entry(
    entry: dict, root: Path, classes: Sequence[ClassSpec], spec: InputSpec
) -> tuple[list[Sample], str]:
    """The samples of one ``data:`` entry of a training YAML, and a short description of it."""
    if "synthetic" in entry:
        from .synth_data import seed_range, synthetic_samples

        known = {"synthetic", "seeds", "shape", "rgb", "density", "use"}
        if set(entry) - known:
            raise ValueError(
                f"synthetic data entry has unknown key(s) {sorted(set(entry) - known)}; "
                f"it takes {', '.join(sorted(known))}"
            )
        kind, seeds = entry["synthetic"], seed_range(entry.get("seeds"))
        shape = tuple(int(v) for v in entry.get("shape", (1040, 1392)))
        samples = synthetic_samples(
            kind, seeds, classes=classes, spec=spec, shape=shape,
            rgb=bool(entry.get("rgb", kind == "culture")), density=float(entry.get("density", 1.0)),
        )
        size = "x".join(map(str, shape))
        return samples, f"synthetic {kind} seeds {seeds.start}-{seeds.stop - 1} ({size})"
    if "folder" not in entry:
        raise ValueError(
            f"data entry {entry!r} needs either folder: <path> or synthetic: <kind> with seeds"
        )
    samples = load_folder(root / entry["folder"], classes, spec, max_side=entry.get("max_side"))
    return samples, str(entry["folder"])


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
