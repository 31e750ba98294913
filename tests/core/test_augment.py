"""Training augmentation: geometry keeps image and masks aligned, zoom changes object size,
appearance changes leave the masks alone, and the spec is read from recipes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cultureseg.core.augment import (
    APPEARANCE,
    AugmentSpec,
    appearance,
    dihedral,
    resample_patch,
)
from napari_cultureseg.core.datasets import Sample
from napari_cultureseg.core.patches import PatchSampler
from napari_cultureseg.core.targets import distances


def _discs(n=256, r=12, step=64):
    yy, xx = np.mgrid[:n, :n]
    lab = np.zeros((n, n), np.int32)
    k = 0
    for cy in range(step // 2, n, step):
        for cx in range(step // 2, n, step):
            k += 1
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
    return lab


def test_flips_and_rotations_keep_image_and_masks_aligned():
    rng = np.random.default_rng(3)
    t = (rng.random((1, 32, 40)) > 0.7).astype(np.uint8)
    v = np.ones_like(t, bool)
    v[:, :4] = False
    seen = set()
    for _ in range(30):
        x2, t2, v2 = dihedral((t.astype(np.float32), t, v), rng)
        assert np.array_equal(x2 > 0.5, t2 > 0) and v2.sum() == v.sum()
        seen.add(x2.shape)
    assert seen == {(1, 32, 40), (1, 40, 32)}  # rotations happen


def test_zoom_makes_objects_bigger_or_smaller_and_keeps_them_aligned():
    lab = _discs()
    t = np.stack([lab > 0, distances(lab)]).astype(np.float32)
    s = Sample("d", (lab > 0).astype(np.float32)[None], t, np.ones_like(t, bool), "g")
    area = np.pi * 12**2
    for zoom in (0.5, 2.0):
        spec = AugmentSpec(dihedral=False, intensity=False, zoom=(zoom, zoom), zoom_p=1.0)
        sampler = PatchSampler(
            [s], 128, np.random.default_rng(0), augment=spec, soft={1: 0}, positive_fraction=1.0
        )
        from scipy import ndimage as ndi

        inside = []
        for _ in range(6):
            x, tb, vb = sampler.draw()
            labels, n = ndi.label(tb[0] > 0)
            sizes = np.bincount(labels.ravel())[1:]
            edge = np.r_[labels[0], labels[-1], labels[:, 0], labels[:, -1]]
            inside += [sz for i, sz in enumerate(sizes, 1) if not np.isin(i, edge)]
        assert inside, "some object lies wholly inside a patch"
        assert np.median(inside) == pytest.approx(area * zoom**2, rel=0.15)
        # image and mask still agree (up to the anti-aliasing of a shrunk image at outlines)
        assert np.mean((x[0] > 0.5) != (tb[0] > 0)) < 0.01
        # the distance channel stays a distance: high inside, zero outside, max near 1
        assert tb[1][tb[0] == 0].max() == 0 and 0.85 < tb[1].max() <= 1.0
        assert vb[0][tb[0] > 0].all()


def test_a_zoomed_out_window_beyond_a_small_image_is_unknown_padding():
    t = np.ones((1, 40, 40), np.uint8)
    s = Sample("s", np.ones((1, 40, 40), np.float32), t, np.ones_like(t, bool), "g")
    spec = AugmentSpec(dihedral=False, intensity=False, zoom=(0.5, 0.5), zoom_p=1.0)
    x, tb, vb = PatchSampler([s], 64, np.random.default_rng(0), augment=spec).draw()
    # 128 px of window for 40 px of image: about (40/2)² of 64² pixels known
    assert vb.sum() == pytest.approx(20 * 20, rel=0.2)
    assert tb[vb].all() and tb.sum() < 1.5 * vb.sum()  # the mask shrank with the image


def test_resample_patch_thresholds_masks_and_keeps_distances_soft():
    t = np.zeros((2, 8, 8), np.float32)
    t[0, 2:6, 2:6] = 1
    t[1, 2:6, 2:6] = 0.5
    x, tr, vr = resample_patch(t[:1].copy(), t, np.ones_like(t, bool), 16, soft=(1,))
    assert set(np.unique(tr[0])) <= {0.0, 1.0}
    assert 0 < tr[1].max() <= 0.5 and np.unique(tr[1]).size > 2
    assert vr.all()


@pytest.mark.parametrize("op", sorted(APPEARANCE))
def test_each_appearance_change_changes_the_image_and_nothing_else(op):
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0.5, 0.2, (1, 64, 64)), 0, 1).astype(np.float32)
    spec = AugmentSpec(dihedral=False, intensity=False, **{op: 1.0})
    changed = [not np.allclose(appearance(x, spec, rng), x) for _ in range(10)]
    assert any(changed)
    assert all(np.isfinite(appearance(x, spec, rng)).all() for _ in range(10))
    off = AugmentSpec(dihedral=False, intensity=False)
    assert np.array_equal(appearance(x, off, rng), x)


def test_augment_spec_from_recipe_values():
    assert AugmentSpec.from_config(True) == AugmentSpec()
    assert AugmentSpec.from_config(False) == AugmentSpec(dihedral=False, intensity=False)
    spec = AugmentSpec.from_config({"zoom": [0.5, 2], "appearance": True, "invert": 0.0})
    assert spec.zoom == (0.5, 2.0) and spec.blur == APPEARANCE["blur"] and spec.invert == 0.0
    for bad, match in (
        ({"zoom": [2, 1]}, "zoom"),
        ({"blur": 2}, "probability"),
        ({"sharpen": 0.1}, "unknown"),
        ("yes", "mapping"),
    ):
        with pytest.raises(ValueError, match=match):
            AugmentSpec.from_config(bad)
