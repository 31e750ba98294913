"""The multilabel U-Net: one network, one sigmoid output per class (classes may overlap).

segmentation-models-pytorch's U-Net (Ronneberger et al. 2015) with any of its
encoders, never with downloaded weights (bundles carry their own). Registered as
``unet``; its output stride is ``2 ** encoder_depth``.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp

UNET_DECODER = (256, 128, 64, 32, 16)


def smp_unet(in_channels: int, out: int, encoder: str, encoder_depth: int, decoder_channels):
    """smp's U-Net with ``out`` outputs and no pretrained weights (nothing is downloaded)."""
    return smp.Unet(
        encoder_name=encoder,
        encoder_weights=None,
        encoder_depth=encoder_depth,
        decoder_channels=tuple(decoder_channels),
        in_channels=in_channels,
        classes=out,
    )


def multilabel_unet(
    *,
    in_channels: int,
    classes: int,
    encoder: str = "resnet18",
    encoder_depth: int = 5,
    decoder_channels: tuple[int, ...] = UNET_DECODER,
) -> smp.Unet:
    """One U-Net with one logit per class: smp's ``Unet`` class itself, so a bundle's
    weights keep smp's names and load in any smp-based tool."""
    return smp_unet(in_channels, classes, encoder, encoder_depth, decoder_channels)
