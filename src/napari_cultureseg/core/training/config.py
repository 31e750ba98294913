"""The optimisation settings of a training run, and the report it yields after every batch.

Everything about the *model* (architecture, classes, input, tiling, scale)
lives in :class:`bundle_config.BundleConfig`; :class:`TrainConfig` holds how it is
optimised and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..augment import AugmentSpec


@dataclass(frozen=True)
class TrainConfig:
    """How a training run optimises (read once, on the GUI thread, or from a YAML recipe)."""

    steps: int = 500
    batch_size: int = 4
    patch_size: int = 256
    """Side of the training patches; a multiple of 32."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decays (Sadanandan et al. 2017: (0.5, 0.99) for both networks)."""
    weight_decay: float = 1e-4
    """Decoupled L2 penalty on the weights (AdamW; Rahkonen et al. 2020 used L2 with λ = 0.001)."""
    schedule: str = "onecycle"
    """``onecycle`` (linear warm-up then cosine to 1 % of ``lr``), ``cosine`` or ``constant``;
    see :func:`losses.lr_factor`. With ``max_seconds`` the run's progress is the larger of
    the step and time fractions."""
    warmup: float = 0.05
    """Fraction of the steps spent warming up (``onecycle``)."""
    seed: int = 0
    val_every: int = 100
    early_stop_patience: int | None = 10
    """Stop after this many validations without a better score (None: never)."""
    select_by: str = "dice"
    """Which validation score picks the kept weights: ``dice`` (mean Dice over classes)
    or ``objects`` (mean of the classes' Dice and the counted classes' SA(0.5), so that
    weights that split objects better win when the masks are alike)."""
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
    """Extra factor on the foreground weight of ``class_weighting`` (Sadanandan et al. 2017: 3)."""
    dice_weight: float = 0.0
    """Weight of an added soft-Dice term (0: BCE only)."""
    positive_fraction: float = 0.5
    negative_fraction: float = 0.25
    augment: AugmentSpec | bool | dict = True
    """``True`` (flips, mild gamma/brightness), ``False``, or an :class:`~..augment.AugmentSpec`
    (or its mapping: zoom range, appearance changes)."""
    threads: int | None = None
    """CPU threads for torch (None: all cores); restored when training ends."""
    device: str = "auto"
    precision: str = "fp32"
    """``fp32``; ``bf16`` (the forward pass under bfloat16 autocast, the network in
    channels-last layout; weights, optimiser and loss stay float32); or ``auto``: bf16
    where the hardware computes it natively (CPUs with AMX or AVX512-BF16, CUDA GPUs
    with bf16), fp32 elsewhere. Measured on a 2-core Xeon with AMX (a mobilenet_v2 /
    resnet18 U-Net, batch 4 of 256², one thread): 1.22 / 1.92 s a step in fp32,
    0.78 / 0.81 s in bf16 (``benchmarks/precision.py``)."""
    max_seconds: float | None = None
    """Time budget in seconds: training stops cleanly (after a last validation) once
    exceeded, and the learning-rate schedule is stretched over it (see ``schedule``)."""
    adversarial: bool = False
    """Train a discriminator alternately with the model and add its verdict to the loss
    (Sadanandan et al. 2017; see :mod:`..adversarial`). The discriminator is saved with
    the model."""
    adversarial_lambda: tuple[float, float] = (8.3e-6, 0.1)
    """Weight of the adversarial term, linear from the first to the second value
    (Sadanandan et al.'s values) over ``adversarial_lambda_steps`` steps, or over the
    run's progress."""
    adversarial_lambda_steps: int | None = None
    """Steps over which λ rises (Sadanandan et al. 2017: 12 000 iterations, so 8.3e-6 a
    step); None stretches the rise over this run's progress, however short it is."""
    disc_lr: float = 1e-3
    """The discriminator's (constant) Adam learning rate (Sadanandan 2017); it uses ``betas``."""
    disc_params: dict = field(default_factory=dict)
    """``base``, ``depth`` of :func:`adversarial.make_discriminator` (default 8, 6, as in
    Sadanandan et al. 2017)."""
    per_class_batches: bool = True
    """``per-class-unets`` only: every step draws each class's network its own batch,
    centred on positives and negatives of that class, and that network learns its
    class alone from it (Rahkonen et al. 2020 trains one binary U-Net per class on sub-images
    with and without its class). False: all networks share one batch and one loss."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights (e.g. 0.999; 0: off). When
    set, validation scores the average and the kept weights are the average's, which
    change smoothly where the raw weights' scores jump from check to check (see
    :mod:`.averaging`)."""
    choose_seeds: tuple[float, ...] = ()
    """Candidate seed thresholds: after training, every class separated by a distance map
    (``separate: distance``) takes the one that scores the best SA(0.5) on the validation
    images with the kept weights (recorded in the lineage: ``metrics.val_seeds``); ()
    keeps the recipe's. Like early stopping, a choice made on the validation split only."""
    keep_after: float = 0.0
    """Fraction of the schedule (steps or time, whichever it follows) before which a
    validation check cannot give the kept weights (0: any check can). With few
    validation images a check early in a long schedule, at a high learning rate, can
    win by chance and then fail on other images (docs/benchmarks.md, "Leave one
    experiment out"); checks before it count for nothing, early stopping included."""
    val_tile: int | None = None
    """Tile for validation (None: the bundle's tile, capped at the image size)."""
    val_batch_size: int = 4
    data_description: str = ""
    """What the samples are (recorded in the new model's lineage)."""

    def __post_init__(self):
        if self.select_by not in ("dice", "objects"):
            raise ValueError(f"select_by must be 'dice' or 'objects', not {self.select_by!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be fp32, bf16 or auto, not {self.precision!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(
                f"ema must be 0 (off) or a decay below 1 such as 0.999, not {self.ema}"
            )
        if not 0.0 <= self.keep_after < 1.0:
            raise ValueError(
                f"keep_after is a fraction of the schedule in [0, 1), not {self.keep_after}"
            )
        if any(not 0.0 < t < 1.0 for t in self.choose_seeds):
            raise ValueError(
                f"choose_seeds are thresholds between 0 and 1, not {self.choose_seeds}"
            )
        object.__setattr__(self, "choose_seeds", tuple(float(t) for t in self.choose_seeds))
        object.__setattr__(self, "augment", AugmentSpec.from_config(self.augment))


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
    val_objects: dict[str, float] | None = None
    """SA(0.5) of the counted classes at validation steps (``select_by: objects``)."""

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 1.0
