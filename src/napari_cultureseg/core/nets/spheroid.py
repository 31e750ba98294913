"""Sadanandan et al.'s (2017) segmentation network for bright-field spheroids.

The layout and the places where the paper leaves it open (*guess*) are drawn in
:mod:`napari_cultureseg.core.spheroid`, beside the paper's training aids and
post-processing. Registered as ``spheroid-multiscale``
(:mod:`napari_cultureseg.core.nets`); its output stride is 16.
"""

from __future__ import annotations

import torch
from torch import nn


def cbr(cin, cout, k=3, stride=1, dilation=1):
    kh, kw = (k, k) if isinstance(k, int) else k
    pad = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, (kh, kw), stride, pad, dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InceptionResidual(nn.Module):
    """IR1 (``factorised``: 1×3 then 3×1) or IR2 (3×3) block.

    Three branches (1×1; 1×1→k; 1×1→k→k, Inception-ResNet-A style, *guess*:
    the paper gives the kernels, not the branches), concatenated, reduced by
    a 1×1 convolution, added to the input (short skip), then BN and ReLU.
    Branch width ``channels // 4`` (*guess*).
    """

    def __init__(self, channels, factorised):
        super().__init__()
        b = max(channels // 4, 4)
        k = [(1, 3), (3, 1)] if factorised else [3]

        def conv_k(c):
            return [cbr(c, b, kk) for kk in k]

        self.b1 = cbr(channels, b, 1)
        self.b2 = nn.Sequential(cbr(channels, b, 1), *conv_k(b))
        self.b3 = nn.Sequential(cbr(channels, b, 1), *conv_k(b), *conv_k(b))
        self.reduce = nn.Conv2d(3 * b, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = self.reduce(torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1))
        return torch.relu(self.bn(x + y))


class DeepPath(nn.Module):
    """``n`` IR blocks; long skips add the path's input after every third block
    (*guess* at Fig. 2's long skips), then a 3×3 convolution (paper)."""

    def __init__(self, channels, n, factorised):
        super().__init__()
        self.blocks = nn.ModuleList(InceptionResidual(channels, factorised) for _ in range(n))
        self.out = cbr(channels, channels, 3)

    def forward(self, x):
        y = x
        for i, block in enumerate(self.blocks, 1):
            y = block(y)
            if i % 3 == 0:
                y = y + x
        return self.out(y)


class Up(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.fuse = cbr(cout + cskip, cout, 3)

    def forward(self, x, skip):
        return self.fuse(torch.cat([self.up(x), skip], 1))


class SpheroidNet(nn.Module):
    """Sadanandan et al.'s segmentation network: ``(B, C, H, W)`` → ``(B, classes, H, W)`` logits.

    Parameters
    ----------
    in_channels, classes
        Input channels and output classes (Sadanandan et al. 2017: 1 bright-field channel, 1 class).
    base
        Feature maps of the first dilated convolution (60 in the paper).
    blocks
        IR blocks per deep path (9 in the paper).

    Any H, W work: inputs are reflect-padded to a multiple of 16 and the
    output cropped back (480 = 30·16 needs no padding).
    """

    def __init__(self, *, in_channels: int, classes: int, base: int = 60, blocks: int = 9):
        super().__init__()
        c1, c2, c3, c4 = base, 2 * base, 4 * base, 8 * base
        self.d1 = cbr(in_channels, c1, 3, 2, 2)
        self.d2 = cbr(c1, c2, 3, 2, 2)
        self.d3 = cbr(c2, c3, 3, 2, 2)
        self.path1 = DeepPath(c3, blocks, factorised=True)
        self.d4 = cbr(c3, c4, 3, 2, 2)
        self.path2 = DeepPath(c4, blocks, factorised=False)
        self.up3 = Up(c4, c3, c3)
        self.up2 = Up(c3, c2, c2)
        self.up1 = Up(c2, c1, c1)
        self.up0 = Up(c1, in_channels, c1)
        self.head = nn.Conv2d(c1, classes, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        ph, pw = -h % 16, -w % 16
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        x1 = self.d1(x)
        x2 = self.d2(x1)
        x3 = self.d3(x2)
        p1 = self.path1(x3)
        p2 = self.path2(self.d4(x3))
        y = self.up3(p2, p1)
        y = self.up2(y, x2)
        y = self.up1(y, x1)
        y = self.up0(y, x)
        return self.head(y)[..., :h, :w]
