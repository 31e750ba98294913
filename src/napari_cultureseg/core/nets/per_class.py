"""Rahkonen et al.'s (2022) method: one binary U-Net per class.

Registered as ``per-class-unets``; its output stride is ``2 ** encoder_depth``.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import UNET_DECODER, smp_unet


class PerClassUNets(nn.Module):
    """One binary U-Net per class, each with a two-way softmax.

    Each network outputs (background, class) scores; the class logit is their
    difference, so ``sigmoid(logit)`` equals the network's softmax probability
    of the class and the ensemble has the same interface as a multilabel U-Net.
    Training steps one class's network at a time through :meth:`class_logit`.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        classes: int,
        encoder: str = "resnet18",
        encoder_depth: int = 5,
        decoder_channels: tuple[int, ...] = UNET_DECODER,
    ):
        super().__init__()
        self.nets = nn.ModuleList(
            smp_unet(in_channels, 2, encoder, encoder_depth, decoder_channels)
            for _ in range(classes)
        )

    def class_logit(self, c: int, x: torch.Tensor) -> torch.Tensor:
        """Class ``c``'s logit ``(N, 1, H, W)`` from its own network alone."""
        o = self.nets[c](x)
        return o[:, 1:2] - o[:, 0:1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.class_logit(c, x) for c in range(len(self.nets))], dim=1)
