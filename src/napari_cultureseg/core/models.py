"""Model architectures by name (the device a model runs on is :mod:`.device`'s).

Every architecture maps ``(B, C, H, W)`` to per-class *logits* ``(B, K, H, W)``;
``sigmoid(logits)`` is the probability of each class independently, so classes
may overlap. Build one with :func:`create_model`::

    net = create_model("unet", in_channels=1, classes=2, encoder="resnet18")

torch and segmentation-models-pytorch are imported only when a model is
built, so importing this module is cheap. Architectures defined in other
modules of the package (Sadanandan et al.'s ``spheroid-multiscale`` in
:mod:`.spheroid`) are registered on first use: a bundle names its
architecture, and nobody has to import that module first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_REGISTRY: dict[str, Callable[..., Any]] = {}
_STRIDES: dict[str, int] = {}
# architecture → module that registers it when imported (imported on first use)
_LAZY = {
    "spheroid-multiscale": "napari_cultureseg.core.spheroid",
    "tiramisu": "napari_cultureseg.core.tiramisu",
}


def register(name: str, *, stride: int = 32) -> Callable:
    """Decorator: make a model factory available to :func:`create_model` as ``name``.

    ``stride`` is what :func:`output_stride` reports for it: tiles are
    multiples of it and start on its grid.
    """

    def deco(factory: Callable) -> Callable:
        _REGISTRY[name] = factory
        _STRIDES[name] = int(stride)
        return factory

    return deco


def architectures() -> list[str]:
    """Names of the known architectures (registered, or registered on first use)."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def _factory(name: str) -> Callable[..., Any]:
    if name not in _REGISTRY and name in _LAZY:
        importlib.import_module(_LAZY[name])  # its @register fills the registry
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; known: {', '.join(architectures())}"
        ) from None


def create_model(name: str, *, in_channels: int, classes: int, **params: Any) -> torch.nn.Module:
    """Build architecture ``name`` with ``in_channels`` inputs and ``classes`` logit outputs."""
    return _factory(name)(in_channels=in_channels, classes=classes, **params)


def _smp_unet(in_channels: int, out: int, encoder: str, encoder_depth: int, decoder_channels):
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name=encoder,
        encoder_weights=None,  # nothing is downloaded at run time; bundles carry weights
        encoder_depth=encoder_depth,
        decoder_channels=tuple(decoder_channels),
        in_channels=in_channels,
        classes=out,
    )


@register("unet")
def multilabel_unet(
    *,
    in_channels: int,
    classes: int,
    encoder: str = "resnet18",
    encoder_depth: int = 5,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
):
    """One U-Net with one sigmoid output per class (multilabel: classes may overlap)."""
    return _smp_unet(in_channels, classes, encoder, encoder_depth, decoder_channels)


@register("per-class-unets")
def per_class_unets(
    *,
    in_channels: int,
    classes: int,
    encoder: str = "resnet18",
    encoder_depth: int = 5,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
):
    """Rahkonen et al.'s method: one binary U-Net per class, each with a two-way softmax.

    Each network outputs (background, class) scores; the class logit is their
    difference, so ``sigmoid(logit)`` equals the network's softmax probability
    of the class and the ensemble has the same interface as a multilabel U-Net.
    """
    import torch

    class PerClassUNets(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.nets = torch.nn.ModuleList(
                _smp_unet(in_channels, 2, encoder, encoder_depth, decoder_channels)
                for _ in range(classes)
            )

        def class_logit(self, c: int, x):
            """Class ``c``'s logit ``(N, 1, H, W)`` from its own network alone."""
            o = self.nets[c](x)
            return o[:, 1:2] - o[:, 0:1]

        def forward(self, x):
            return torch.cat([self.class_logit(c, x) for c in range(len(self.nets))], dim=1)

    return PerClassUNets()


@register("deeplabv3+", stride=16)
def deeplabv3plus(
    *,
    in_channels: int,
    classes: int,
    encoder: str = "resnet18",
    encoder_output_stride: int = 16,
    decoder_channels: int = 256,
    decoder_atrous_rates: tuple[int, int, int] = (12, 24, 36),
):
    """DeepLabV3+ (Chen et al. 2018; smp's): atrous convolutions, spatial pyramid pooling and
    a light decoder, one logit per class (the MIDL 2019 nuclei and cytoplasm study's best)."""
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(
        encoder_name=encoder,
        encoder_weights=None,
        encoder_output_stride=int(encoder_output_stride),
        decoder_channels=int(decoder_channels),
        decoder_atrous_rates=tuple(decoder_atrous_rates),
        in_channels=in_channels,
        classes=classes,
    )


def output_stride(name: str, params: dict) -> int:
    """How many input pixels one step of the deepest feature map spans (tiles align to it)."""
    if name in ("unet", "per-class-unets"):
        return 2 ** int(params.get("encoder_depth", 5))
    if name == "tiramisu":  # one pooling per down block
        return 2 ** len(params.get("down", (4, 5, 7, 10, 12)))
    if name == "deeplabv3+":
        return int(params.get("encoder_output_stride", 16))
    if "stride" in params:
        return int(params["stride"])
    _factory(name)
    return _STRIDES[name]
