import numpy as np
import pytest

from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.synth import phase_culture
from napari_cultureseg.core.tiling import run_to_end


def test_segment_any_plane_kind_returns_full_size_probabilities(tiny_bundle):
    for img in (
        np.random.default_rng(0).random((70, 130)),
        np.zeros((150, 140, 3), np.uint8),
        np.ones((40, 40), np.uint16),
    ):
        seg = run_to_end(segment(tiny_bundle, img, tile=64))
        assert seg.probabilities.shape == (2, *img.shape[:2])
        assert np.isfinite(seg.probabilities).all()
        masks = seg.masks()
        assert set(masks) == {"cell", "debris"} and masks["cell"].shape == img.shape[:2]


def test_tiled_equals_whole_image_prediction_far_from_seams(tiny_bundle):
    img = phase_culture((256, 256), seed=3)[0]
    whole = run_to_end(segment(tiny_bundle, img, tile=256)).probabilities
    tiled = run_to_end(segment(tiny_bundle, img, tile=128, overlap=0.5)).probabilities
    # the same network, tiled with Gaussian blending, stays close to one whole-image pass
    assert np.abs(whole - tiled).mean() < 0.02


def test_segment_refuses_bad_tiles_and_stacks(tiny_bundle):
    with pytest.raises(ValueError, match="multiple of 8 for this model"):
        run_to_end(segment(tiny_bundle, np.zeros((64, 64)), tile=100))
    with pytest.raises(ValueError, match="stack"):
        run_to_end(segment(tiny_bundle, np.zeros((3, 64, 64))))


def test_synthetic_culture_is_deterministic_and_exact():
    a, la = phase_culture((128, 160), seed=5)
    b, lb = phase_culture((128, 160), seed=5)
    c, _ = phase_culture((128, 160), seed=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert la.max() > 3 and a.shape == la.shape == (128, 160)
    # cells are darker than their surroundings in phase contrast
    assert a[la > 0].mean() < a[la == 0].mean()


def test_predict_resizes_for_a_resize_to_model_and_maps_back():
    """The plumbing the Fine-tune preview shares with segment(): what the network sees."""
    from dataclasses import replace

    from napari_cultureseg.core.model_input import InputSpec
    from napari_cultureseg.core.segment import predict

    from ..conftest import tiny_config

    seen = []

    def predictor(batch):  # records the input size; returns the image as "probability"
        seen.append(batch.shape)
        return np.clip(batch[:, :1], 0, 1).repeat(2, axis=1)

    x = np.zeros((1, 64, 96), np.float32)
    x[:, 16:48, 24:72] = 1.0
    whole = replace(tiny_config(), input=InputSpec(resize_to=48))
    probs, scale = run_to_end(predict(x, predictor, whole))
    assert seen == [(1, 1, 32, 48)]  # longer side 48, aspect kept, one pass
    assert probs.shape == (2, 64, 96) and scale == pytest.approx(4.0)
    assert probs[0, 32, 48] > 0.99 and probs[0, 2, 2] < 0.01
    seen.clear()
    tiled = tiny_config(tile=64)
    probs, scale = run_to_end(predict(x, predictor, tiled))
    assert scale == 1.0 and all(s[-2:] == (64, 64) for s in seen) and len(seen) > 1
    np.testing.assert_allclose(probs[0], x[0], atol=1e-6)


def test_default_tiling_grows_tiles_and_stays_close_to_the_fixed_one(tiny_bundle):
    # tiny's tile is 128, overlap 0.25 (32 px): a 256² image takes 3 × 3 tiles of 128²,
    # or 2 × 2 of 144² with the same 32 px of overlap
    img = phase_culture((256, 256), seed=4)[0]

    def tiles(gen):
        seen = set()
        try:
            while True:
                seen.add(next(gen).total)
        except StopIteration as stop:
            return seen, stop.value.probabilities

    grown, p_grown = tiles(segment(tiny_bundle, img))
    fixed, p_fixed = tiles(segment(tiny_bundle, img, tile=128))
    assert (grown, fixed) == ({4}, {9})
    assert tiles(segment(tiny_bundle, img, tile=128, fit=True))[0] == {4}
    assert np.abs(p_grown - p_fixed).mean() < 0.02


def test_a_model_runs_with_its_own_test_time_augmentation_unless_told(tiny_bundle):
    """``BundleConfig.tta`` (a recipe's ``tta``, chosen on its validation images) is what
    ``segment`` averages by default; an explicit ``tta`` wins."""
    img, _ = phase_culture((96, 128), seed=3)
    four = tiny_bundle.with_config(tta=4)
    default = run_to_end(segment(four, img, device="cpu")).raw
    np.testing.assert_array_equal(default, run_to_end(segment(four, img, tta=4, device="cpu")).raw)
    one = run_to_end(segment(four, img, tta=1, device="cpu")).raw
    assert not np.allclose(default, one)  # the copies did something
    np.testing.assert_array_equal(one, run_to_end(segment(tiny_bundle, img, device="cpu")).raw)
