"""The architectures the MIDL 2019 study compares for nuclei and cytoplasm from bright field:
the Tiramisu (FC-DenseNet, Jégou et al. 2017, written here) and DeepLabV3+ (smp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cultureseg.core.bundles import Bundle
from napari_cultureseg.core.nets import architectures, create_model, output_stride
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.tiling import run_to_end

from ..conftest import tiny_config

SMALL = {
    "tiramisu": {"first": 8, "down": [2, 2, 2], "bottleneck": 2, "growth": 4},
    "deeplabv3+": {"encoder": "resnet18", "decoder_channels": 16},
}


def test_fc_densenet103_is_the_papers_network():
    net = create_model("tiramisu", in_channels=3, classes=11)  # CamVid's 11 classes
    n = sum(p.numel() for p in net.parameters())
    assert 9.2e6 < n < 9.5e6  # Jégou et al. 2017, Table 2: 9.4 M
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    # 103 layers: the first convolution, 4+5+7+10+12 + 15 + 12+10+7+5+4 dense layers,
    # 5 transitions down, the 1x1 head, and 5 transitions up (transposed)
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) + len(ups) == 103
    assert output_stride("tiramisu", {}) == 32


@pytest.mark.parametrize("arch", ["tiramisu", "deeplabv3+"])
def test_round_trip_and_segment(tmp_path, arch):
    assert arch in architectures()
    torch.manual_seed(0)
    bundle = Bundle(tiny_config(architecture=arch, params=SMALL[arch], tile=64))
    net = bundle.build().eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        out = net(x)
    assert out.shape == (2, 2, 64, 64)
    loaded = Bundle.load(bundle.save(tmp_path / arch))
    with torch.inference_mode():
        assert torch.equal(loaded.build().eval()(x), out)
    image = np.random.default_rng(0).random((150, 173)).astype(np.float32)
    seg = run_to_end(segment(loaded, image, device="cpu"))
    assert seg.raw.shape == (2, 150, 173) and np.isfinite(seg.raw).all()


def test_tiramisu_stride_follows_its_blocks_and_bad_shapes_are_refused():
    assert output_stride("tiramisu", {"down": [2, 2, 2]}) == 8
    assert output_stride("deeplabv3+", {"encoder_output_stride": 8}) == 8
    with pytest.raises(ValueError, match="at least one down block"):
        create_model("tiramisu", in_channels=1, classes=2, down=[])
