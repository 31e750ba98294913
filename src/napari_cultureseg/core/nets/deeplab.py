"""DeepLabV3+ (Chen et al. 2018), as segmentation-models-pytorch builds it.

Atrous convolutions, spatial pyramid pooling and a light decoder, one logit per
class: the best of the three networks in the MIDL 2019 study of nuclei and
cytoplasm from bright field. Registered as ``deeplabv3+``; its output stride is
``encoder_output_stride``.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp


def deeplabv3plus(
    *,
    in_channels: int,
    classes: int,
    encoder: str = "resnet18",
    encoder_output_stride: int = 16,
    decoder_channels: int = 256,
    decoder_atrous_rates: tuple[int, int, int] = (12, 24, 36),
) -> smp.DeepLabV3Plus:
    """smp's ``DeepLabV3Plus`` class with no pretrained weights (nothing is downloaded)."""
    return smp.DeepLabV3Plus(
        encoder_name=encoder,
        encoder_weights=None,
        encoder_output_stride=int(encoder_output_stride),
        decoder_channels=int(decoder_channels),
        decoder_atrous_rates=tuple(decoder_atrous_rates),
        in_channels=in_channels,
        classes=classes,
    )
