"""Objects from a predicted distance map: the target, its post-processing, the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cultureseg.core import object_metrics as OM
from napari_cultureseg.core.bundle_config import (
    BundleConfig,
    ClassSpec,
    distance_channels,
    soft_channels,
)
from napari_cultureseg.core.postprocess import instances
from napari_cultureseg.core.segmentation import Segmentation
from napari_cultureseg.core.targets import distances, targets_from_masks
from napari_cultureseg.core.training import masked_loss


def touching_pair():
    """Two discs that touch along a short neck, as instance labels."""
    yy, xx = np.mgrid[:60, :90]
    lab = np.zeros((60, 90), np.int32)
    lab[(yy - 30) ** 2 + (xx - 28) ** 2 <= 15**2] = 1
    lab[((yy - 30) ** 2 + (xx - 58) ** 2 <= 15**2) & (lab == 0)] = 2
    return lab


def test_distance_target_is_one_on_each_ridge_and_dips_where_objects_meet():
    lab = touching_pair()
    d = distances(lab)
    assert d.dtype == np.float32 and d[lab == 0].max() == 0 and d[lab > 0].min() > 0
    for k in (1, 2):
        assert d[lab == k].max() == pytest.approx(1.0)
    # where the two meet the distance is low: it is what splits them again
    meet = (lab == 1) & np.roll(lab == 2, -1, axis=1)
    assert meet.any() and d[meet].max() < 0.2
    # the same shape at twice the size has the same target (up to sampling)
    big = np.kron(lab, np.ones((2, 2), np.int32))
    assert np.abs(distances(big)[::2, ::2] - d).mean() < 0.05


def test_the_true_distance_map_gives_back_the_true_objects():
    lab = touching_pair()
    d = distances(lab)
    assert (instances(lab > 0, method="watershed", h=2.0).max()) in (1, 2)  # may merge
    got = instances(lab > 0, method="distance", distance=d, seed_threshold=0.5)
    assert got.max() == 2
    match = OM.match_instances(got, lab, 0.9)
    assert match.tp == 2 and match.fp == match.fn == 0


def test_a_mask_part_without_a_seed_is_an_object_of_its_own():
    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = mask[25:35, 25:35] = True
    dist = np.zeros((40, 40), np.float32)
    dist[8:12, 8:12] = 0.9  # only the first square has a seed
    got = instances(mask, method="distance", distance=dist)
    assert got.max() == 2 and (got > 0).sum() == mask.sum()
    with pytest.raises(ValueError, match="distance channel"):
        instances(mask, method="distance")


def test_segmentation_uses_the_distance_channel_of_its_class():
    lab = touching_pair()
    cls = (ClassSpec("cell", instances=True, separate="distance", min_size=0, fill_holes=False),)
    probs = np.stack([(lab > 0).astype(np.float32), distances(lab)])
    seg = Segmentation(probs, cls)
    assert seg.instances("cell").max() == 2
    cfg = BundleConfig("m", "unet", cls)
    assert cfg.n_outputs == 2 and distance_channels(cls) == {"cell": 1} and soft_channels(cls)


def test_targets_from_masks_adds_distance_channels_only_for_known_classes():
    lab = touching_pair()
    classes = (ClassSpec("cell", separate="distance"), ClassSpec("nucleus"))
    t, v = targets_from_masks({"cell": lab}, classes, lab.shape)
    assert t.shape == v.shape == (3, *lab.shape) and t.dtype == np.float32
    assert v[0].all() and not v[1].any() and v[2].all()
    np.testing.assert_allclose(t[2], distances(lab))
    # a painted mask: touching objects are one component, their distances unknown ...
    t, v = targets_from_masks({"cell": lab > 0}, classes, lab.shape, derived_known=False)
    assert v[0].all() and not v[2][lab > 0].any() and v[2][lab == 0].all()
    assert not t[2].any()
    # ... but a lone (convex) object's distances are known, and exact
    lone = np.where(lab == 1, 1, 0)
    t, v = targets_from_masks({"cell": lone > 0}, classes, lab.shape, derived_known=False)
    assert v[2].all()
    np.testing.assert_allclose(t[2], distances(lone))


def test_lone_objects_are_the_convex_components_of_a_painted_mask():
    from napari_cultureseg.core.targets import lone_objects

    lab = touching_pair()  # two discs on a neck: solidity below 0.88
    mask = lab > 0
    mask[5:15, 5:12] = True  # a lone rectangle
    mask[50:52, 80:82] = True  # a lone speck
    labels, known = lone_objects(mask)
    assert len(np.unique(labels)) == 3  # background and the two lone objects
    assert (labels[5:15, 5:12] > 0).all() and (labels[50:52, 80:82] > 0).all()
    assert not known[lab > 0].any() and known[~mask].all() and (labels[lab > 0] == 0).all()


def test_the_loss_of_a_distance_channel_is_zero_at_its_target_and_has_no_dice():
    lab = touching_pair()
    d = torch.from_numpy(distances(lab))[None, None]
    m = torch.from_numpy((lab > 0).astype(np.float32))[None, None]
    target = torch.cat([m, d], 1)
    valid = torch.ones_like(target, dtype=torch.bool)
    exact = torch.logit(target.clamp(1e-6, 1 - 1e-6))
    kw = dict(class_weighting=True, dice_weight=1.0, soft=(1,))
    at_target = masked_loss(exact, target, valid, **kw)
    off = masked_loss(exact + torch.cat([torch.zeros_like(m), 0.5 + 0 * d], 1), target, valid, **kw)
    assert float(at_target) < 1e-3 and float(off) > float(at_target) + 1e-3


def test_splitting_changes_how_objects_are_cut_not_the_mask():
    """``Segmentation.with_seeds``: the user's splitting (the seed threshold) of a class."""
    lab = touching_pair()
    d = distances(lab)
    d[lab > 0] = np.maximum(d[lab > 0], 0.45)  # the valley between the two is shallow: 0.45
    cls = (
        ClassSpec("cell", instances=True, separate="distance", min_size=0, fill_holes=False),
        ClassSpec("debris", min_size=0),
    )
    probs = np.stack([(lab > 0).astype(np.float32), np.zeros_like(d), d])
    seg = Segmentation(probs, cls)
    assert seg.instances("cell").max() == 2  # the model's own 0.5 cuts at the valley
    merged = seg.with_seeds({"cell": 0.4})
    assert merged.instances("cell").max() == 1  # below the valley: one object
    np.testing.assert_array_equal(merged.mask("cell"), seg.mask("cell"))
    assert seg.classes[0].seed_threshold == 0.5  # the result it came from is unchanged
    assert seg.with_seeds({}) is seg
    with pytest.raises(ValueError, match="splitting applies to cell"):
        seg.with_seeds({"debris": 0.5})  # not separated by a distance map
    with pytest.raises(ValueError, match="splitting applies to cell"):
        seg.with_seeds({"nucleus": 0.5})  # not a class of this model
    with pytest.raises(ValueError, match="between 0 and 1"):
        seg.with_seeds({"cell": 1.5})
