"""The networks, by name: one explicit registry.

Every network maps ``(B, C, H, W)`` to per-class *logits* ``(B, K, H, W)``;
``sigmoid(logits)`` is each class's probability on its own, so classes may
overlap. Build one with :func:`create_model`::

    net = create_model("unet", in_channels=1, classes=2, encoder="resnet18")

:data:`REGISTRY` maps each name to the module of this package that defines it
(one module per network), the factory in that module (a ``torch.nn.Module``
class, or a function returning smp's class) and its output stride, a function
of the network's params. A module, and torch and smp with it, is imported only
when its network is built: importing this package, listing the names or asking
a stride is cheap. (Where a network runs is :mod:`..device`'s matter.)

A new network: write its module here (keyword-only ``in_channels``, ``classes``
and its own params, each with a default), add one :class:`Architecture` line to
:data:`REGISTRY`, and a small setting to ``SMALL`` in
``tests/core/test_nets_contract.py``, whose contract test then builds it, runs
it, saves and reloads it in a bundle and trains it a few steps.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _unet_stride(params: dict) -> int:
    return 2 ** int(params.get("encoder_depth", 5))


@dataclass(frozen=True)
class Architecture:
    """Where a network is defined and how far apart its deepest features lie."""

    module: str
    """Module of this package that defines it."""
    factory: str
    """Its class or factory function in that module."""
    stride: Callable[[dict], int]
    """Output stride for given params: tiles are multiples of it and start on its grid."""
    params: tuple[str, ...]
    """The params it takes besides ``in_channels`` and ``classes`` (a bundle's config is
    checked against them without importing torch; the contract test holds them equal to
    the factory's signature)."""


_UNET = ("encoder", "encoder_depth", "decoder_channels")

REGISTRY: dict[str, Architecture] = {
    "unet": Architecture("unet", "multilabel_unet", _unet_stride, _UNET),
    "per-class-unets": Architecture("per_class", "PerClassUNets", _unet_stride, _UNET),
    "deeplabv3+": Architecture(
        "deeplab",
        "deeplabv3plus",
        lambda p: int(p.get("encoder_output_stride", 16)),
        ("encoder", "encoder_output_stride", "decoder_channels", "decoder_atrous_rates"),
    ),
    "tiramisu": Architecture(
        "tiramisu",
        "Tiramisu",
        lambda p: 2 ** len(p.get("down", (4, 5, 7, 10, 12))),
        ("first", "down", "bottleneck", "growth", "dropout"),
    ),
    "spheroid-multiscale": Architecture(
        "spheroid", "SpheroidNet", lambda p: 16, ("base", "blocks")
    ),
}


def architectures() -> list[str]:
    """Names of the known networks."""
    return sorted(REGISTRY)


def _entry(name: str) -> Architecture:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; known: {', '.join(architectures())}"
        ) from None


def takes(name: str) -> tuple[str, ...]:
    """The params network ``name`` takes besides ``in_channels`` and ``classes``."""
    return _entry(name).params


def factory(name: str) -> Callable[..., Any]:
    """The class or function that builds network ``name`` (its module imported now)."""
    entry = _entry(name)
    return getattr(importlib.import_module(f"{__name__}.{entry.module}"), entry.factory)


def create_model(name: str, *, in_channels: int, classes: int, **params: Any) -> torch.nn.Module:
    """Build network ``name`` with ``in_channels`` inputs and ``classes`` logit outputs."""
    return factory(name)(in_channels=in_channels, classes=classes, **params)


def output_stride(name: str, params: dict) -> int:
    """How many input pixels one step of the deepest feature map spans (tiles align to it)."""
    return int(_entry(name).stride(params))
