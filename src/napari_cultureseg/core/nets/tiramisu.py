"""The Tiramisu: a fully convolutional DenseNet (Jégou et al. 2017).

One of the three networks the MIDL 2019 study of nuclei and cytoplasm from bright
field compares (with a U-Net and DeepLabV3+).

The "one hundred layers Tiramisu" (FC-DenseNet103) is a U-shaped network whose
blocks are DenseNet blocks (Huang et al. 2017): every layer (batch norm, ReLU,
3×3 convolution, dropout) sees the concatenation of all the block's earlier
outputs and adds ``growth`` feature maps. Going down, a block's input and
output are concatenated and passed through a *transition down* (batch norm,
ReLU, 1×1 convolution, dropout, 2×2 max pooling); going up, a 3×3 transposed
convolution with stride 2 (*transition up*) carries only the new feature maps
of the block below, which are concatenated with the skip connection of the
same level. FC-DenseNet103 has a 48-filter first convolution, blocks of 4, 5, 7,
10 and 12 layers down, 15 in the bottleneck, 12, 10, 7, 5, 4 up, growth 16 and
dropout 0.2: 9.4 M parameters. smp has no DenseNet decoder of this kind, so
it is written here; it is small.

Registered as ``tiramisu`` (:mod:`napari_cultureseg.core.nets`), one logit per class
like every architecture there; its output stride is 2 ** (number of down blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FC_DENSENET103 = {
    "first": 48,
    "down": (4, 5, 7, 10, 12),
    "bottleneck": 15,
    "growth": 16,
    "dropout": 0.2,
}
"""Jégou et al. 2017, Table 2 (the up path mirrors ``down``)."""


class Layer(nn.Sequential):
    def __init__(self, cin: int, growth: int, dropout: float):
        super().__init__(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, growth, 3, padding=1, bias=False),
            nn.Dropout2d(dropout),
        )


class DenseBlock(nn.Module):
    """``n`` layers; returns only the ``n * growth`` new maps (the input is kept apart)."""

    def __init__(self, cin: int, n: int, growth: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(Layer(cin + i * growth, growth, dropout) for i in range(n))

    def forward(self, x):
        new = []
        for layer in self.layers:
            out = layer(torch.cat([x, *new], 1) if new else x)
            new.append(out)
        return torch.cat(new, 1)


class TransitionDown(nn.Sequential):
    def __init__(self, c: int, dropout: float):
        super().__init__(
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1, bias=False),
            nn.Dropout2d(dropout),
            nn.MaxPool2d(2),
        )


class Tiramisu(nn.Module):
    """FC-DenseNet (default: FC-DenseNet103, Jégou et al. 2017) with one logit per class.

    ``down``: layers of each dense block on the way down (mirrored on the way up);
    the output stride is ``2 ** len(down)``; tiles must be multiples of it.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        classes: int,
        first: int = FC_DENSENET103["first"],
        down: Sequence[int] = FC_DENSENET103["down"],
        bottleneck: int = FC_DENSENET103["bottleneck"],
        growth: int = FC_DENSENET103["growth"],
        dropout: float = FC_DENSENET103["dropout"],
    ):
        if len(down) < 1 or min(down) < 1 or bottleneck < 1 or growth < 1 or first < 1:
            raise ValueError(
                "tiramisu needs at least one down block, and positive layer counts, growth "
                f"and first filters; got down={list(down)}, bottleneck={bottleneck}, "
                f"growth={growth}, first={first}"
            )
        super().__init__()
        cin, down = in_channels, tuple(down)
        self.first = nn.Conv2d(cin, first, 3, padding=1, bias=False)
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        c, skips = first, []
        for n in down:
            self.down_blocks.append(DenseBlock(c, n, growth, dropout))
            c += n * growth
            skips.append(c)
            self.downs.append(TransitionDown(c, dropout))
        self.bottleneck = DenseBlock(c, bottleneck, growth, dropout)
        new = bottleneck * growth
        self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for n, skip in zip(reversed(down), reversed(skips), strict=True):
            self.ups.append(
                nn.ConvTranspose2d(new, new, 3, stride=2, padding=1, output_padding=1, bias=False)
            )
            self.up_blocks.append(DenseBlock(skip + new, n, growth, dropout))
            c = skip + new + n * growth  # the last block's input and output together
            new = n * growth
        self.head = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        x = self.first(x)
        skips = []
        for block, down in zip(self.down_blocks, self.downs, strict=True):
            x = torch.cat([x, block(x)], 1)
            skips.append(x)
            x = down(x)
        new = self.bottleneck(x)
        for i, (up, block) in enumerate(zip(self.ups, self.up_blocks, strict=True)):
            x = torch.cat([up(new), skips[-1 - i]], 1)
            new = block(x)
        return self.head(torch.cat([x, new], 1))
