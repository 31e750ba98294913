"""Objects from a predicted flow field (cellpose's representation): target, turning, objects."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cultureseg.core import object_metrics as OM
from napari_cultureseg.core.augment import dihedral, turn_flows
from napari_cultureseg.core.bundle_config import (
    BundleConfig,
    ClassSpec,
    flow_channels,
    soft_channels,
    value_channels,
)
from napari_cultureseg.core.datasets import Sample
from napari_cultureseg.core.flows import follow_flow
from napari_cultureseg.core.postprocess import instances
from napari_cultureseg.core.segment import augmented
from napari_cultureseg.core.segmentation import Segmentation
from napari_cultureseg.core.targets import flows, targets_from_masks

FLOW = ClassSpec("cell", instances=True, separate="flow", min_size=10, fill_holes=False)


def scene() -> np.ndarray:
    """Two discs touching along a neck and a long bent cell (an L), as instance labels."""
    yy, xx = np.mgrid[:80, :120]
    lab = np.zeros((80, 120), np.int32)
    lab[(yy - 25) ** 2 + (xx - 25) ** 2 <= 14**2] = 1
    lab[((yy - 25) ** 2 + (xx - 52) ** 2 <= 14**2) & (lab == 0)] = 2
    lab[50:59, 10:95] = 3  # the L: a long arm ...
    lab[8:59, 86:95] = 3  # ... and a second one at right angles
    lab[(yy - 25) ** 2 + (xx - 52) ** 2 <= 14**2] = 2  # the disc lies over the arm's end
    return lab


def test_following_the_true_flows_leads_every_pixel_of_an_object_to_one_place():
    lab = scene()
    f = flows(lab)
    assert f.shape == (2, *lab.shape) and f.dtype == np.float32
    assert not f[:, lab == 0].any()
    norm = np.hypot(*f)[lab > 0]
    assert np.mean(np.abs(norm - 1) < 1e-5) > 0.99  # unit vectors but at the centres
    ys, xs = np.nonzero(lab)
    end = follow_flow(f, ys, xs, 200)
    for k in (1, 2, 3):
        spread = end[lab[ys, xs] == k].std(axis=0)
        assert spread.max() < 2.0, (k, spread)  # the L too: round its bend
    centres = [end[lab[ys, xs] == k].mean(axis=0) for k in (1, 2, 3)]
    assert min(np.hypot(*(a - b)) for a in centres for b in centres if a is not b) > 10


def test_the_true_flows_give_back_the_true_objects_where_a_distance_map_breaks_an_l():
    lab = scene()
    enc = (flows(lab) + 1) / 2  # as the network gives it
    got = instances(lab > 0, method="flow", flow=enc, flow_steps=200, min_size=10)
    match = OM.match_instances(got, lab, 0.9)
    assert got.max() == 3 and match.tp == 3 and match.fp == match.fn == 0
    with pytest.raises(ValueError, match="flow channels"):
        instances(lab > 0, method="flow")


def test_pixels_that_reach_no_centre_join_the_object_they_touch():
    mask = np.zeros((30, 60), bool)
    mask[5:25, 5:55] = True
    f = np.zeros((2, 30, 60), np.float32)
    f[1, :, :30], f[1, :, 30:] = -1.0, 1.0  # two halves flow apart to their ends
    f[:, :, 28:32] = 0.0  # a strip in the middle goes nowhere: it gathers too few pixels
    got = instances(mask, method="flow", flow=(f + 1) / 2, flow_steps=60, min_size=120)
    assert got.max() == 2 and (got > 0).sum() == mask.sum()
    assert (got[:, :28][mask[:, :28]] == got[10, 5]).all()


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_flows_turn_with_the_image(k, flip):
    lab = scene()[:, :, None].transpose(2, 0, 1)  # (1, H, W)
    enc = (flows(lab[0]) + 1) / 2
    t = np.concatenate([lab > 0, enc]).astype(np.float32)
    turned = np.rot90(t, k, axes=(-2, -1))
    turned = turned[..., ::-1] if flip else turned
    turned = turn_flows(turned, [(1, 2)], k, flip)
    moved = np.rot90(lab[0], k)
    moved = moved[:, ::-1] if flip else moved
    expect = (flows(np.ascontiguousarray(moved)) + 1) / 2
    inside = moved > 0
    # the centre pixel may move by one where the median falls between two pixels
    assert np.mean(np.abs(turned[1:, inside] - expect[:, inside]) < 0.05) > 0.97


def test_a_random_flip_turns_the_flow_target_with_the_objects():
    lab = scene()
    enc = (flows(lab) + 1) / 2
    x = np.zeros((3, *lab.shape), np.float32)
    t = np.concatenate([(lab > 0)[None], enc]).astype(np.float32)
    seen = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        # the labels ride along as a fourth array: turned as the image, never as a vector
        _, tt, _, moved = dihedral((x, t, np.ones_like(t, bool), lab[None]), rng, [(1, 2)])
        moved = np.ascontiguousarray(moved[0])
        inside = moved > 0
        expect = (flows(moved) + 1) / 2
        assert np.mean(np.abs(tt[1:, inside] - expect[:, inside]) < 0.05) > 0.97
        seen.add(moved.tobytes())
    assert len(seen) > 3  # several of the eight ways were drawn


def _oracle_predictor(batch: np.ndarray) -> np.ndarray:
    """A 'network' that knows the answer: objects are the input's bright components; it
    outputs their mask and true flows (encoded), so it is equivariant by construction."""
    from scipy import ndimage as ndi

    out = []
    for img in batch:
        lab, _ = ndi.label(img[0] > 0.5)
        out.append(np.concatenate([(lab > 0)[None], (flows(lab) + 1) / 2]).astype(np.float32))
    return np.stack(out)


def test_test_time_augmentation_turns_flow_channels_back():
    lab = scene()
    batch = (lab > 0).astype(np.float32)[None, None]
    plain = _oracle_predictor(batch)
    for tta in (2, 4, 8):
        avg = augmented(_oracle_predictor, tta, flows=[(1, 2)])(batch)
        inside = lab > 0
        assert np.mean(np.abs(avg[0, 1:, inside] - plain[0, 1:, inside]) < 0.05) > 0.97
        # without turning the vectors back, the average would be wrong
    wrong = augmented(_oracle_predictor, 4)(batch)
    assert np.mean(np.abs(wrong[0, 1:, lab > 0] - plain[0, 1:, lab > 0]) < 0.05) < 0.6


def test_flow_channels_in_the_bundle_targets_and_segmentation():
    lab = scene()
    classes = (FLOW, ClassSpec("nucleus"))
    assert flow_channels(classes) == {"cell": (2, 3)}
    assert BundleConfig("m", "unet", classes).n_outputs == 4
    assert soft_channels(classes) == (2, 3) and value_channels(classes) == {2: None, 3: None}
    t, v = targets_from_masks({"cell": lab}, classes, lab.shape)
    assert t.shape == (4, *lab.shape) and t.dtype == np.float32
    assert v[0].all() and not v[1].any() and v[2:].all()
    np.testing.assert_allclose(t[2:], (flows(lab) + 1) / 2)
    assert (t[2:, lab == 0] == 0.5).all()  # background: no direction
    # painted: touching objects are one component, their flows unknown; the L is lone? no:
    t, v = targets_from_masks({"cell": lab > 0}, classes, lab.shape, derived_known=False)
    assert v[2:, lab == 0].all() and not v[2:, lab > 0].any()
    seg = Segmentation(np.concatenate([t[:1], t[1:2], (flows(lab) + 1) / 2]), classes)
    got = seg.instances("cell")
    assert got.max() == 3 and OM.match_instances(got, lab, 0.9).tp == 3


def test_a_few_training_steps_learn_flows(tmp_path):
    from napari_cultureseg.core.training import TrainConfig, run_training

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    samples = []
    for i in range(4):
        lab = np.zeros((96, 96), np.int32)
        for j in range(5):
            cy, cx = rng.integers(15, 81, 2)
            lab[((yy - cy) ** 2 + (xx - cx) ** 2 < 100) & (lab == 0)] = j + 1
        x = ((lab > 0) + 0.1 * rng.standard_normal(lab.shape)).astype(np.float32)[None]
        t, v = targets_from_masks({"cell": lab}, (FLOW,), lab.shape)
        samples.append(Sample(f"s{i}", x, t, v, "g", {0: lab}))
    cfg = BundleConfig(
        "flows",
        "unet",
        (FLOW,),
        params={"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        tile=96,
    )
    tc = TrainConfig(steps=30, batch_size=4, patch_size=64, lr=3e-3, val_every=30, threads=1)
    losses = []
    bundle = run_training(
        cfg, tc, samples[:3], samples[3:], on_report=lambda r: losses.append(r.loss)
    )
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    out = bundle.predictor("cpu")(samples[0].image[None])[0]
    assert out.shape == (3, 96, 96)
    lab = samples[0].labels[0]
    got, true = 2 * out[1:, lab > 0] - 1, flows(lab)[:, lab > 0]
    cos = (got * true).sum(0) / np.maximum(np.hypot(*got) * np.hypot(*true), 1e-6)
    assert cos.mean() > 0.5  # the flows point the right way (a random field: about 0)
