"""An exponential moving average of a network's weights while it trains.

Validation scores of a network taken every few hundred steps jump from one check to
the next (``fluorescence-nuclei``: SA(0.5) between 0.745 and 0.79 on the same 39
images), so the check that happens to be best is partly chance. The average of the
weights over the last ~1/(1 - decay) steps moves smoothly and is what
:func:`..loop.fine_tune` validates and keeps when ``TrainConfig.ema`` is set (Polyak
averaging; the same as timm's ``ModelEmaV2``). It is torch's own
:class:`torch.optim.swa_utils.AveragedModel`, with a decay that starts low so the
first steps' random weights leave the average quickly (``(1 + n) / (10 + n)``, as
TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``). BatchNorm statistics
are averaged with the weights.
"""

from __future__ import annotations


def averaged(net, decay: float):
    """An :class:`~torch.optim.swa_utils.AveragedModel` of ``net`` with EMA ``decay``;
    call its ``update_parameters(net)`` after every optimiser step and use its
    ``module`` as the network."""
    from torch.optim.swa_utils import AveragedModel

    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema must be between 0 and 1 (e.g. 0.999), not {decay}")

    def ema(averages, current, n_averaged):
        d = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        for a, c in zip(averages, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:  # counters (num_batches_tracked): the latest
                a.copy_(c)

    return AveragedModel(net, multi_avg_fn=ema, use_buffers=True)
