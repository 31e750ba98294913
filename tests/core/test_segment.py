import numpy as np
import pytest

from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.synth import phase_culture
from napari_cultureseg.core.tiling import run_to_end


def test_segment_any_plane_kind_returns_full_size_probabilities(tiny_bundle):
    for img in (np.random.rand(70, 130), np.zeros((150, 140, 3), np.uint8), np.ones((40, 40), np.uint16)):
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
