"""Synthetic six-class cultures (Rahkonen 2020), spheroid wells (Sadanandan 2017)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cultureseg.core.synth.culture import (
    CLASS_NAMES,
    CLASSES,
    _draw,
    class_specs,
    culture,
)
from napari_cultureseg.core.synth.spheroid import _spheroid_well, spheroid_well

SMALL = (300, 420)


@pytest.fixture(scope="module")
def full():
    """One full Cell-IQ-sized frame, shared: every class is present in it."""
    return culture(seed=5)


def scene(shape=SMALL, seed=1, density=1.0):
    draw_seq, _ = np.random.SeedSequence(seed).spawn(2)  # as culture() does
    return _draw(shape, np.random.default_rng(draw_seq), density)


def test_classes_are_seed_000s_six_with_visible_colours():
    assert CLASS_NAMES == ("S", "I", "IP", "P", "O", "R")
    colours = dict((n, c) for n, c, _ in CLASSES)
    assert colours == {
        "S": "#ff2020",
        "I": "#ffffff",
        "IP": "#a0a0a0",
        "P": "#2050ff",
        "O": "#80d0ff",
        "R": "#ffe020",
    }
    specs = class_specs()
    assert [s.name for s in specs] == list(CLASS_NAMES) and specs[2].colour == "#a0a0a0"


def test_deterministic_per_seed_and_different_across_seeds():
    a, ma = culture(SMALL, seed=3)
    b, mb = culture(SMALL, seed=3)
    c, mc = culture(SMALL, seed=4)
    assert a.shape == (*SMALL, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and all(np.array_equal(ma[k], mb[k]) for k in CLASS_NAMES)
    assert not np.array_equal(a, c) and any(not np.array_equal(ma[k], mc[k]) for k in CLASS_NAMES)


def test_gray_option_draws_the_same_culture():
    rgb, m_rgb = culture(SMALL, seed=2)
    gray, m_gray = culture(SMALL, seed=2, rgb=False)
    assert gray.shape == SMALL and gray.dtype == np.uint8
    assert all(m_gray[k].dtype == bool and np.array_equal(m_gray[k], m_rgb[k]) for k in CLASS_NAMES)
    # the colour cast is slight: channels differ, but by a few percent
    means = rgb.reshape(-1, 3).mean(0)
    assert 0 < np.ptp(means) < 0.15 * means.mean()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_masks_are_exactly_what_was_drawn(seed):
    sc = scene(seed=seed)
    m = sc.masks
    union = np.logical_or.reduce([m[k] for k in CLASS_NAMES])
    # every masked pixel was drawn into the image, and nothing of a class elsewhere
    assert np.array_equal(sc.phi > 0, union)
    stamps = {k: np.zeros(sc.shape, bool) for k in CLASS_NAMES}
    for name, sl, inside in sc.objects:
        stamps[name][sl] |= inside
    for k in ("S", "I", "O"):
        assert np.array_equal(m[k], stamps[k]), k
    for k in ("R", "IP"):  # opaque spheroids hide what lies under them
        assert np.array_equal(m[k], stamps[k] & ~m["O"]), k
    assert np.array_equal(m["P"], (sc.vessel_rho <= 1) & ~m["O"])


def test_classes_overlap_where_seed_000_says(full):
    _, m = full
    assert all(m[k].any() for k in CLASS_NAMES)
    assert (m["P"] & m["S"]).any() and (m["P"] & m["I"]).any() and (m["I"] & m["S"]).any()
    assert (m["R"] & m["P"]).any()
    ring = ndi.binary_dilation(m["O"], iterations=2)
    assert (ring & m["R"]).any() and (ring & m["IP"]).any()  # R and IP touch the spheroids
    for k in ("S", "I", "IP", "P", "R"):
        assert not (m[k] & m["O"]).any(), k


def test_image_is_dark_on_objects_with_bright_halos(full):
    image, m = full
    gray = image.astype(float).mean(-1)
    union = np.logical_or.reduce([m[k] for k in CLASS_NAMES])
    far = ~ndi.binary_dilation(union, iterations=25)
    bg = np.median(gray[far])
    assert gray[m["O"]].mean() < 0.6 * bg
    others = np.logical_or.reduce([m[k] for k in CLASS_NAMES if k != "P"])
    assert gray[m["P"] & ~others].mean() < bg  # vessels alone
    assert gray[m["S"]].mean() < bg and gray[m["I"]].mean() < bg
    halo = ndi.binary_dilation(m["O"], iterations=4) & ~ndi.binary_dilation(m["O"], iterations=1)
    assert np.median(gray[halo & ~union]) > bg


def test_density_scales_the_cells():
    few = scene((400, 400), seed=11, density=0.2).masks
    many = scene((400, 400), seed=11, density=3.0).masks
    assert many["S"].sum() > 3 * few["S"].sum()


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="shape"):
        culture((8, 8))
    with pytest.raises(ValueError, match="difficulty"):
        spheroid_well(128, difficulty="medium")


def test_generators_do_not_import_torch():
    code = (
        "import sys, napari_cultureseg.core.synth.culture, napari_cultureseg.core.synth.spheroid,"
        " napari_cultureseg.core.spheroid; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------- spheroid wells


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_one_connected_spheroid_fully_inside_the_well(difficulty):
    for seed in range(6):
        image, mask, well = _spheroid_well(256, seed, difficulty)
        assert image.shape == mask.shape == (256, 256) and image.dtype == np.uint8
        assert ndi.label(mask)[1] == 1
        ys, xs = np.nonzero(mask)
        cy, cx = well["centre"]
        assert np.hypot(ys - cy, xs - cx).max() <= well["radius"]
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < 255 and xs.max() < 255
        # diameter 10-45 % of the well's (equivalent diameter, with some slack for the shape)
        frac = np.sqrt(mask.sum() / np.pi) / well["radius"]
        assert 0.06 < frac < 0.5


def test_spheroid_wells_are_deterministic_and_easy_ones_are_clearer():
    a = spheroid_well(256, seed=1)
    b = spheroid_well(256, seed=1)
    c = spheroid_well(256, seed=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])

    def contrast(image, mask):
        around = ndi.binary_dilation(mask, iterations=8) & ~ndi.binary_dilation(mask, iterations=3)
        return (image[around].mean() - image[mask].mean()) / image[around].mean()

    easy = [contrast(*spheroid_well(256, seed=s)) for s in range(4)]
    hard = [contrast(*spheroid_well(256, seed=s, difficulty="hard")) for s in range(4)]
    assert min(easy) > 0.2 and np.mean(hard) < np.mean(easy)


def test_spheroid_wells_at_seed_003_sizes():
    for size in (1080, 2160):
        image, mask = spheroid_well(size, seed=0, difficulty="hard")
        assert image.shape == mask.shape == (size, size) and mask.any()
