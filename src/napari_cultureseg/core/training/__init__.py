"""Training and fine-tuning, split by job.

=================  ==========================================================
``config``         :class:`TrainConfig` (optimisation only) and :class:`Report`
``losses``         the masked multilabel loss and the learning-rate schedule
``validation``     scores on validation images while training runs
``loop``           :func:`fine_tune`, the training generator, and :func:`run_training`
``recipes``        YAML recipes (model, data, train/val/test split), and the
                   fine-tuning recipe with its parent's loss
=================  ==========================================================

Model settings (architecture, classes, input, tiling, scale) live in
:class:`~..bundle_config.BundleConfig`; a new model is trained by handing
:func:`fine_tune` its BundleConfig, a fine-tuned one by handing it the parent
:class:`~..bundles.Bundle`.
"""

from .config import Report, TrainConfig
from .loop import fine_tune, run_training
from .losses import lr_factor, masked_loss
from .recipes import (
    LOSS_FIELDS,
    Recipe,
    finetune_config,
    model_config,
    prepare_from_config,
    split3,
    train_config,
    train_from_config,
    with_parent_loss,
)
from .validation import Validation, resize_samples, score, validate

__all__ = [
    "LOSS_FIELDS",
    "Recipe",
    "Report",
    "TrainConfig",
    "Validation",
    "fine_tune",
    "finetune_config",
    "lr_factor",
    "masked_loss",
    "model_config",
    "prepare_from_config",
    "resize_samples",
    "run_training",
    "score",
    "split3",
    "train_config",
    "train_from_config",
    "validate",
    "with_parent_loss",
]
