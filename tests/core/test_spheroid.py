"""Sadanandan et al.'s multiscale adversarial spheroid network, training aids, post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cultureseg.core.adversarial import make_discriminator
from napari_cultureseg.core.nets import architectures, create_model
from napari_cultureseg.core.spheroid import (
    adversarial_lambda,
    adversarial_losses,
    downsample_input,
    spheroid_mask,
    weighted_labels,
)

torch = pytest.importorskip("torch")


def disc_batch(n=2, size=64):
    """Images of a dark disc on a light background, and the disc masks."""
    yy, xx = np.mgrid[:size, :size]
    masks, images = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        cy, cx, r = size / 2 + 6 * i, size / 2 - 5 * i, size / 4 - 2 * i
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        masks.append(m)
        images.append(0.8 - 0.5 * m + rng.normal(0, 0.05, m.shape))
    x = torch.tensor(np.array(images)[:, None], dtype=torch.float32)
    y = torch.tensor(np.array(masks)[:, None], dtype=torch.float32)
    w = torch.tensor(weighted_labels(np.array(masks)[:, None]))
    return x, y, w


def test_registered_and_builds_for_gray_and_rgb():
    assert "spheroid-multiscale" in architectures()
    for cin, size in ((1, 64), (3, 96)):
        net = create_model("spheroid-multiscale", in_channels=cin, classes=2, base=8).eval()
        with torch.no_grad():
            assert net(torch.zeros(2, cin, size, size)).shape == (2, 2, size, size)
    with torch.no_grad():  # sizes not divisible by 16 are padded and cropped back
        assert net(torch.zeros(1, 3, 50, 70)).shape == (1, 2, 50, 70)


def test_layout_follows_the_paper():
    net = create_model("spheroid-multiscale", in_channels=1, classes=1, base=60)
    assert net.d1[0].out_channels == 60 and net.d4[0].out_channels == 480
    assert net.d1[0].stride == (2, 2) and net.d1[0].dilation == (2, 2)
    assert len(net.path1.blocks) == 9 and len(net.path2.blocks) == 9

    def kernels(blocks):
        return {m.kernel_size for m in blocks.modules() if isinstance(m, torch.nn.Conv2d)}

    # IR1: factorised 1x3 / 3x1 (and 1x1); IR2: 3x3 (and 1x1)
    assert kernels(net.path1.blocks) == {(1, 1), (1, 3), (3, 1)}
    assert kernels(net.path2.blocks) == {(1, 1), (3, 3)}
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 4 and all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in ups)


def test_trains_on_a_disc_with_falling_loss():
    torch.manual_seed(0)
    net = create_model("spheroid-multiscale", in_channels=1, classes=1, base=8).train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y, w = disc_batch()
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y, weight=w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_discriminator_and_adversarial_losses():
    torch.manual_seed(0)
    disc = make_discriminator(1, 1)
    x, y, w = disc_batch(size=96)
    out = disc(x, y)
    assert out.shape == (2, 1, 2, 2) and disc.score(x, y).shape == (2, 1)
    net = create_model("spheroid-multiscale", in_channels=1, classes=1, base=8)
    seg, d = adversarial_losses(disc, x, net(x), y, w, adversarial_lambda(10, 100))
    assert torch.isfinite(seg) and torch.isfinite(d)
    seg.backward()
    assert next(net.parameters()).grad is not None


def test_weighted_labels_by_hand():
    m = np.zeros((2, 4), bool)
    m[0, :2] = True  # 2 foreground, 6 background: W_fg = 3 * 6 / 2
    w = weighted_labels(m)
    assert w.dtype == np.float32 and np.array_equal(w, np.where(m, 9.0, 1.0))
    stack = np.stack([m, np.zeros_like(m), np.ones_like(m)])  # per image; empty / full -> 1
    ws = weighted_labels(stack)
    assert np.array_equal(ws[0], w) and (ws[1] == 1).all() and (ws[2] == 1).all()


def test_adversarial_lambda_rises_linearly():
    assert adversarial_lambda(0, 101) == pytest.approx(8.3e-6)
    assert adversarial_lambda(100, 101) == pytest.approx(0.1)
    assert adversarial_lambda(50, 101) == pytest.approx((8.3e-6 + 0.1) / 2)
    assert adversarial_lambda(500, 101) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        adversarial_lambda(0, 0)


def test_spheroid_mask_keeps_the_largest_filled_object_and_resizes_exactly():
    prob = np.zeros((48, 48), np.float32)
    prob[4:24, 4:24] = 0.9  # the spheroid: 400 px
    prob[12:14, 12:14] = 0.1  # a hole in it
    prob[30:40, 30:40] = 0.8  # a smaller object, above 64 px
    prob[44:46, 2:5] = 1.0  # a speck
    prob[0, 47] = 120 / 255  # exactly at the threshold: background
    expected = np.zeros((48, 48), bool)
    expected[4:24, 4:24] = True
    m = spheroid_mask(prob, (96, 96))
    assert m.dtype == bool and np.array_equal(m, np.kron(expected, np.ones((2, 2), bool)))
    assert np.array_equal(spheroid_mask(prob, (48, 48)), expected)
    # 8-bit maps as Sadanandan et al. 2017 stores them: 120 is background, 121 foreground
    p8 = np.zeros((48, 48), np.uint8)
    p8[10:20, 10:20] = 121
    p8[30:40, 30:40] = 120
    assert spheroid_mask(p8, (48, 48)).sum() == 100
    # resizing the probabilities instead gives the same object at full size
    smooth = spheroid_mask(prob, (100, 100), upsample="prob")
    near = spheroid_mask(prob, (100, 100))
    assert (smooth & near).sum() / (smooth | near).sum() > 0.9
    # nothing above the threshold, or only specks: an empty mask
    assert not spheroid_mask(np.zeros((48, 48)), (96, 96)).any()


def test_downsample_input():
    img = np.full((1080, 1080), 100, np.uint8)
    small = downsample_input(img)
    assert small.shape == (480, 480) and small.dtype == np.float32 and np.allclose(small, 100)
    assert downsample_input(np.zeros((100, 120, 3)), 32).shape == (32, 32, 3)
    with pytest.raises(ValueError):
        downsample_input(np.zeros((2, 3, 4, 5)))
