"""The contract every registered network keeps (as smp's model tests do for theirs).

For each name in the registry: it takes the params the registry says; it builds,
maps (B, C, H, W) to (B, K, H, W) logits on any size on its stride's grid; a
bundle holding it saves and loads to identical outputs; and a few optimiser steps
on one batch bring its loss down. A network added to the registry without a small
setting in ``SMALL`` fails here, so every new one is tested.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from napari_cultureseg.core import nets
from napari_cultureseg.core.bundles import Bundle

from ..conftest import TINY_PARAMS, tiny_config

SMALL = {  # a few thousand parameters each: the whole file runs in seconds
    "unet": TINY_PARAMS,
    "per-class-unets": TINY_PARAMS,
    "deeplabv3+": {"encoder": "resnet18", "decoder_channels": 16},
    "tiramisu": {"first": 8, "down": [2, 2, 2], "bottleneck": 2, "growth": 4},
    "spheroid-multiscale": {"base": 4, "blocks": 1},
}


def check_contract(name: str, params: dict, tmp_path) -> None:
    """Assert the contract for network ``name`` built with ``params``."""
    takes = set(inspect.signature(nets.factory(name)).parameters) - {"in_channels", "classes"}
    assert takes == set(nets.takes(name)), f"{name}: the registry's params are not its factory's"
    stride = nets.output_stride(name, params)
    torch.manual_seed(0)
    for channels in (1, 3):
        net = nets.create_model(name, in_channels=channels, classes=2, **params).eval()
        for side in (2 * stride, 4 * stride):
            with torch.inference_mode():
                out = net(torch.randn(2, channels, side, side + stride))
            assert out.shape == (2, 2, side, side + stride), f"{name}: logits of the wrong shape"
            assert torch.isfinite(out).all()

    bundle = Bundle(tiny_config(architecture=name, params=params, tile=4 * stride))
    x = torch.randn(1, 1, 4 * stride, 4 * stride)
    with torch.inference_mode():
        before = bundle.network("cpu")(x)
        after = Bundle.load(bundle.save(tmp_path / name)).network("cpu")(x)
    assert torch.equal(before, after), f"{name}: a saved bundle does not give the same outputs"

    torch.manual_seed(0)
    net = nets.create_model(name, in_channels=1, classes=2, **params).train()
    # smooth blobs: a target every network can follow at its own stride
    noise = torch.randn(4, 1, 4 * stride, 4 * stride)
    x = torch.nn.functional.avg_pool2d(noise, 9, stride=1, padding=4, count_include_pad=False)
    x = x / x.std()
    target = torch.cat([x > 0.5, x < -0.5], 1).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), f"{name}: loss {losses}"


@pytest.mark.parametrize("name", nets.architectures())
def test_every_registered_network_keeps_the_contract(name, tmp_path):
    assert name in SMALL, f"{name} is registered but has no small setting in SMALL"
    check_contract(name, SMALL[name], tmp_path)


class _Broken(torch.nn.Module):
    """A network that loses its last output row: what the contract must catch."""

    def __init__(self, *, in_channels: int, classes: int, width: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[..., :-1, :]


def test_the_contract_catches_a_broken_network(tmp_path, monkeypatch):
    import sys
    import types

    module = types.ModuleType("napari_cultureseg.core.nets.broken")
    module.Broken = _Broken
    monkeypatch.setitem(sys.modules, module.__name__, module)
    entry = nets.Architecture("broken", "Broken", lambda p: 1, ("width",))
    monkeypatch.setitem(nets.REGISTRY, "broken", entry)
    with pytest.raises(AssertionError, match="logits of the wrong shape"):
        check_contract("broken", {}, tmp_path)
    # and a registry line that names params its network does not take
    monkeypatch.setitem(
        nets.REGISTRY, "broken", nets.Architecture("broken", "Broken", lambda p: 1, ("depth",))
    )
    with pytest.raises(AssertionError, match="the registry's params"):
        check_contract("broken", {}, tmp_path)


def test_names_and_strides_need_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_cultureseg.core import nets\n"
        "from napari_cultureseg.core.bundle_config import BundleConfig\n"
        "assert nets.output_stride('tiramisu', {'down': [2, 2]}) == 4\n"
        "assert nets.output_stride('unet', {'encoder_depth': 4}) == 16\n"
        "assert 'deeplabv3+' in nets.architectures()\n"
        "BundleConfig.from_dict({'format': 'cultureseg-bundle/1', 'name': 'x', "
        "'architecture': 'unet', 'params': {'encoder': 'resnet18'}, "
        "'classes': [{'name': 'cell'}]})\n"
        "assert 'torch' not in sys.modules, 'a name or a stride imported torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
