"""The training loop: a plain generator that yields after every batch.

::

    gen = fine_tune(bundle_or_model_config, train, val, TrainConfig(steps=2000))
    for report in gen:          # one Report per batch; gen.close() stops at once
        ...                     # report.val_dice every `val_every` steps
    # the new Bundle is the generator's return value (see tiling.run_to_end)

With ``TrainConfig.adversarial`` (Sadanandan et al. 2017) a discriminator is trained
alternately with the model and adds a rising adversarial term to its loss;
see :mod:`..adversarial`. torch is imported inside functions so importing
this module stays cheap. The module is over 400 lines because :func:`fine_tune` is one
generator of about 310 lines whose steps share the loop's state (network, optimiser,
sampler, best weights); cutting it up would not make it a pure move.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from ..bundle_config import BundleConfig, flow_channels, soft_channels, value_channels
from ..bundles import Bundle
from ..datasets import Sample
from ..device import to_device
from ..patches import PatchSampler
from .config import Report, TrainConfig
from .losses import lr_factor, masked_loss
from .validation import Validation, choose_seeds, resize_samples, score

LINEAGE_FIELDS = (
    "lr",
    "betas",
    "weight_decay",
    "schedule",
    "batch_size",
    "patch_size",
    "seed",
    "class_weighting",
    "fg_weight_factor",
    "dice_weight",
    "steps",
    "val_every",
    "adversarial",
    "select_by",
    "ema",
    "choose_seeds",
)


def _model_config(model: Bundle | BundleConfig) -> tuple[Bundle | None, BundleConfig]:
    if isinstance(model, BundleConfig):
        return None, model
    if isinstance(model, Bundle):
        card = {
            k: v for k, v in model.config.card.items() if k not in ("validation_ids", "test_ids")
        }
        return model, replace(model.config, lineage={}, card=card)
    raise TypeError(
        "fine_tune trains a Bundle (fine-tuning) or a BundleConfig (a new model), "
        f"not {type(model).__name__}"
    )


def _check(samples: Sequence[Sample], cfg: BundleConfig, what: str) -> None:
    k, c = cfg.n_outputs, cfg.input.channels
    for s in samples:
        if s.target.shape[0] != k or s.image.shape[0] != c:
            raise ValueError(
                f"{what} sample {s.name!r} has {s.image.shape[0]} channel(s) and "
                f"{s.target.shape[0]} class(es); model {cfg.name!r} takes {c} channel(s) and "
                f"predicts {k} channel(s) ({', '.join(cfg.class_names)}"
                f"{', + border/distance channels' if k > len(cfg.classes) else ''}). Load the "
                "samples with the model's classes (ClassSpecs, so those channels are added) "
                "and input spec."
            )


def _train_mode(net, freeze_norm: bool):
    """``net.train()``, with BatchNorm layers left in eval mode when ``freeze_norm``."""
    import torch

    net.train()
    if freeze_norm:
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    return net


def _class_batch(net, c: int, sampler: PatchSampler, n: int, device, forward):
    """Class ``c``'s network of a per-class ensemble (``models.per_class_unets``) on a
    batch drawn for class ``c``: its logit, target and valid, ``(n, 1, P, P)`` each.
    ``forward(model, x)`` runs a model (under the run's precision)."""

    x, t, v = (to_device(a, device) for a in sampler.batch(n, for_class=c))
    return forward(lambda b: net.class_logit(c, b), x), t[:, c : c + 1], v[:, c : c + 1]


def fine_tune(
    model: Bundle | BundleConfig,
    train: Sequence[Sample],
    val: Sequence[Sample],
    config: TrainConfig = TrainConfig(),  # noqa: B008  (frozen: immutable)
    *,
    preview: Callable | None = None,
    preview_every: int = 0,
) -> Generator[Report, str | None, Bundle]:
    """Train ``model`` on ``train``, yielding after every batch.

    Parameters
    ----------
    model
        The parent :class:`Bundle` to fine-tune, or the :class:`BundleConfig` of
        a new model to train from scratch (its network is initialised from
        ``config.seed``).
    train, val
        Samples loaded with the model's classes and input spec. Without
        validation samples the last weights are returned and there is no
        early stopping.
    config
        Optimisation settings; see :class:`TrainConfig`.
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
        (parent, created, data, steps, seconds, best step, metrics), named as
        its config (a fine-tuned one as its parent: rename it with
        :meth:`Bundle.with_config`).

    Notes
    -----
    A model whose input spec has ``resize_to`` (Sadanandan et al. 2017) learns from whole
    images at that size, as ``segment`` will show them to it: samples of
    another size are resized first (:func:`resize_samples`).

    With ``config.adversarial`` a discriminator (:class:`adversarial.Adversary`)
    is trained alternately with the model, one step each per batch, and
    ``λ · BCE(D(image, prediction), real)`` is added to the model's loss, ``λ``
    rising linearly over the run. The discriminator of the best validated
    step is returned with the model (``Bundle.aux["discriminator"]``).
    Fine-tuning such a bundle adversarially resumes that discriminator with
    ``λ`` held at its end value; without one, a fresh discriminator starts
    with ``λ`` near zero (see :mod:`..adversarial`).
    """
    import torch

    bundle, cfg = _model_config(model)
    if config.patch_size % 32:
        raise ValueError(f"patch_size must be a multiple of 32, got {config.patch_size}")
    if not train:
        raise ValueError("no training samples")
    _check(train, cfg, "training")
    _check(val, cfg, "validation")
    if cfg.input.resize_to:
        train = resize_samples(train, cfg.input.resize_to)
        val = resize_samples(val, cfg.input.resize_to)
    from ..device import native_bf16, resolve_device

    device = resolve_device(config.device)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and native_bf16(device))
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    objects = config.select_by == "objects"
    try:
        torch.manual_seed(config.seed)  # the fresh network's initial weights
        net = _train_mode(
            (bundle if bundle is not None else Bundle(cfg)).build().to(device), config.freeze_norm
        )
        if bf16:  # convolutions in bf16 run fastest on channels-last tensors (oneDNN, cuDNN)
            net = net.to(memory_format=torch.channels_last)
        autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

        def forward(model, x):
            with autocast:
                return model(x).float()

        opt = torch.optim.AdamW(
            net.parameters(),
            lr=config.lr,
            betas=tuple(config.betas),
            weight_decay=config.weight_decay,
        )
        average = None
        if config.ema:  # validated and kept instead of the raw weights
            from .averaging import averaged

            average = averaged(net, config.ema)
        kept = net if average is None else average.module
        adversary = None
        if config.adversarial:  # made after the model, so the model's initial weights stay the same
            from ..adversarial import Adversary

            adversary = Adversary(
                cfg.input.channels,
                cfg.n_outputs,
                lr=config.disc_lr,
                betas=tuple(config.betas),
                lam=tuple(config.adversarial_lambda),
                device=device,
                **config.disc_params,
                state=None if bundle is None else bundle.aux.get("discriminator"),
                lambda_steps=config.adversarial_lambda_steps,
                step0=0
                if bundle is None
                else int(bundle.config.lineage.get("adversarial", {}).get("lambda_step", 0)),
            )
        soft = soft_channels(cfg.classes)
        sampler = PatchSampler(
            train,
            config.patch_size,
            np.random.default_rng(config.seed),
            positive_fraction=config.positive_fraction,
            negative_fraction=config.negative_fraction,
            augment=config.augment,
            soft=value_channels(cfg.classes),
            flows=tuple(flow_channels(cfg.classes).values()),
        )
        per_class = config.per_class_batches and cfg.architecture == "per-class-unets"
        if per_class and adversary is not None:
            raise ValueError(
                "adversarial training needs one prediction of all classes per batch; "
                "set per_class_batches: false to train per-class-unets adversarially"
            )

        def loss_of(logits, t, v, channels=None):
            return masked_loss(
                logits,
                t,
                v,
                class_weighting=config.class_weighting,
                weight_clip=config.weight_clip,
                dice_weight=config.dice_weight,
                fg_weight_factor=config.fg_weight_factor,
                soft=soft if channels is None else (),
            )

        val_tile = config.val_tile or cfg.tile

        def validation(seeds=()) -> Validation:
            v = score(
                kept,
                val,
                cfg,
                tile=val_tile,
                device=device,
                batch_size=config.val_batch_size,
                objects=objects or bool(seeds),
                seeds=seeds,
            )
            _train_mode(net, config.freeze_norm)
            return v

        def snapshot():
            return {  # contiguous: safetensors stores row-major tensors only
                k: w.detach().cpu().clone(memory_format=torch.contiguous_format)
                for k, w in kept.state_dict().items()
            }

        start = time.perf_counter()
        best = {
            "score": -math.inf,
            "step": 0,
            "state": None,
            "val": Validation({}, {}),
            "disc": None
            if adversary is None or bundle is None
            else bundle.aux.get("discriminator"),
        }
        history, since_best, stopped, step = [], 0, "steps", 0
        if config.keep_parent_if_better and bundle is not None and val:
            v = validation()
            best.update(score=v.score(config.select_by), step=0, state=snapshot(), val=v)
            history.append({"step": 0, "val_dice": v.dice, **_objects(v)})
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
                loss = torch.stack(
                    [
                        loss_of(
                            *_class_batch(net, c, sampler, config.batch_size, device, forward),
                            channels=c,
                        )
                        for c in range(len(net.nets))
                    ]
                ).mean()
            else:
                x, t, v = (to_device(a, device) for a in sampler.batch(config.batch_size))
                logits = forward(net, x)
                loss = loss_of(logits, t, v)
            total, adv = loss, None
            if adversary is not None:
                g, lam = adversary.generator_loss(x, logits, v, progress, step=step)
                total = loss + g
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if average is not None:
                average.update_parameters(net)
            if adversary is not None:  # then the discriminator, on the same (detached) prediction
                d = adversary.step(x, logits, t, v)
                adv = {"lambda": lam, "generator": float(g.detach()), "discriminator": d}
            loss_value = float(loss.detach())
            for what, value in (
                ("loss", float(total.detach())),
                ("discriminator's loss", adv["discriminator"] if adv else 0.0),
            ):
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"the {what} became {value} at step {step}; lower the learning rate"
                    )
            elapsed = time.perf_counter() - start
            out_of_time = bool(config.max_seconds) and elapsed >= config.max_seconds
            dice, is_best, sa = None, False, None
            if val and (step % config.val_every == 0 or step == config.steps or out_of_time):
                v = validation()
                dice, sa = v.dice, (v.objects or None)
                s = v.score(config.select_by)
                history.append({"step": step, "val_dice": v.dice, **_objects(v)})
                # a check early in the schedule is neither kept nor counted (keep_after)
                if progress >= config.keep_after or out_of_time:
                    if s > best["score"]:
                        is_best, since_best = True, 0
                        best.update(score=s, step=step, state=snapshot(), val=v)
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
                step,
                config.steps,
                loss_value,
                lr,
                elapsed,
                dice,
                is_best,
                shown,
                adversarial=adv,
                val_objects=sa,
            )
            if command == "stop":
                stopped = "user"
                if val and dice is None:  # judge the weights the user stopped at, too
                    v = validation()
                    history.append({"step": step, "val_dice": v.dice, **_objects(v)})
                    if v.score(config.select_by) > best["score"]:
                        best.update(
                            score=v.score(config.select_by), step=step, state=snapshot(), val=v
                        )
                        if adversary is not None:
                            best["disc"] = adversary.state_dict()
                break
            if out_of_time:
                stopped = "time"
                break
            if config.early_stop_patience and since_best >= config.early_stop_patience:
                stopped = "early_stop"
                break
        seconds = time.perf_counter() - start
        if best["state"] is None:  # no validation data: the last weights
            best.update(step=step, state=snapshot())
            if adversary is not None:
                best["disc"] = adversary.state_dict()
        seeds = {}
        if config.choose_seeds and val and best["step"] != 0:  # the kept weights, once more
            kept.load_state_dict(best["state"])
            cfg, seeds = choose_seeds(cfg, validation(config.choose_seeds))
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
        "training": {**_recipe(config, cfg), "precision": "bf16" if bf16 else "fp32"},
        "metrics": {
            "val_dice": best["val"].dice,
            "val_dice_per_image_mean": best["val"].per_image,
            **({"val_sa_0.5": best["val"].objects} if best["val"].objects else {}),
            "history": history,
        },
    }
    aux = {"discriminator": best["disc"]} if adversary is not None and best["disc"] else {}
    ratio = getattr(best.get("val"), "sizes", {}).get(cfg.scale.reference or "")
    if ratio and cfg.scale.diameter:  # what the scale estimate corrects for (ScaleSpec.bias)
        cfg = replace(cfg, scale=replace(cfg.scale, bias=float(np.clip(ratio, 0.5, 2.0))))
        lineage["metrics"]["val_size_ratio"] = ratio
    if seeds:
        lineage["metrics"]["val_seeds"] = seeds
    return Bundle(replace(cfg, lineage=lineage), best["state"], aux=aux)


def _objects(v: Validation) -> dict:
    return {"val_sa_0.5": v.objects} if v.objects else {}


def _recipe(config: TrainConfig, cfg: BundleConfig) -> dict:
    """The training settings as JSON gives them back (lists, not tuples), for the lineage."""
    keys = (
        LINEAGE_FIELDS
        + (
            ("adversarial_lambda", "adversarial_lambda_steps", "disc_lr", "disc_params")
            if config.adversarial
            else ()
        )
        + (("per_class_batches",) if cfg.architecture == "per-class-unets" else ())
    )
    out = {k: list(v) if isinstance(v := getattr(config, k), tuple) else v for k in keys}
    out["augment"] = config.augment.to_dict()
    return out


def run_training(
    model: Bundle | BundleConfig,
    config: TrainConfig,
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    on_report: Callable[[Report], None] | None = None,
) -> Bundle:
    """Run :func:`fine_tune` to the end, passing every report to ``on_report``."""
    gen = fine_tune(model, train, val, config)
    while True:
        try:
            report = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_report is not None:
            on_report(report)
