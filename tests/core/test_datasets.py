"""Loading training folders, splitting them, and drawing training patches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cultureseg.core.datasets import Sample, experiment_of, load_folder, split
from napari_cultureseg.core.images import ImageError
from napari_cultureseg.core.model_input import InputSpec, Normalisation, to_model_input
from napari_cultureseg.core.patches import PatchSampler, match_to_brightest

DATA = Path(__file__).parents[2].parent / "shared" / "data"


def _write(folder: Path, stem: str, image: np.ndarray, masks: dict[str, np.ndarray]) -> None:
    tifffile.imwrite(folder / f"{stem}_image.tif", image)
    for cls, m in masks.items():
        tifffile.imwrite(folder / f"{stem}_{cls}.tif", m, compression="zlib")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 5:15] = 1
    labels[20:30, 30:45] = 7
    _write(tmp_path, "exp1_a", rng.integers(0, 4000, (40, 50), dtype=np.uint16), {"cell": labels})
    _write(
        tmp_path,
        "exp2_b",
        rng.integers(0, 255, (40, 50), dtype=np.uint8),
        {"nucleus": (labels == 1).astype(np.uint8), "cell": (labels > 0).astype(np.uint8)},
    )
    _write(tmp_path, "exp3_c", rng.integers(0, 255, (40, 50), dtype=np.uint8), {})
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_load_folder_reads_masks_and_marks_missing_ones_unknown(folder):
    samples = load_folder(folder, ["nucleus", "cell"], InputSpec())
    assert [s.name for s in samples] == ["exp1_a", "exp2_b"]  # exp3_c has no mask at all
    a, b = samples
    assert a.image.shape == (1, 40, 50) and a.image.dtype == np.float32
    assert a.target.shape == a.valid.shape == (2, 40, 50)
    assert a.target.dtype == np.uint8 and a.valid.dtype == bool
    assert not a.valid[0].any(), "a missing nucleus mask must be unknown, not background"
    assert a.valid[1].all()
    assert set(np.unique(a.target[1])) == {0, 1}  # instance labels → foreground
    assert a.target[1].sum() == 100 + 150
    assert b.valid.all() and b.target[0].sum() == 100
    assert a.group == "exp1"


def test_load_folder_can_keep_unannotated_images(folder):
    samples = load_folder(folder, ["cell"], keep_unannotated=True)
    c = {s.name: s for s in samples}["exp3_c"]
    assert not c.valid.any()


def test_load_folder_errors_say_what_is_wrong(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        load_folder(tmp_path / "missing", ["cell"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="_image"):
        load_folder(empty, ["cell"])
    tifffile.imwrite(folder / "exp2_b_cell.tif", np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageError, match="differs from its image"):
        load_folder(folder, ["cell"])


def test_load_folder_downsamples_only_when_asked(folder):
    full = load_folder(folder, ["cell"])[0]
    small = load_folder(folder, ["cell"], max_side=25)[0]
    assert full.shape == (40, 50)
    assert small.shape == (20, 25)
    assert small.target[0, 3:7, 3:7].all() and small.valid.all()
    assert int(small.target.sum()) * 4 == pytest.approx(int(full.target.sum()), rel=0.2)


def test_experiment_of():
    assert experiment_of("181024TK20_p0002_t00012_z001") == "181024TK20"
    assert experiment_of("fig1-a_b_c_200925SK30_p0030_t00001_z001") == "200925SK30"
    assert experiment_of("fig3-a_190905WW12_p0001_t00001_z001") == "190905WW12"
    assert experiment_of("set07") == "set07"
    assert experiment_of("00071198d059ba7f") == "00071198d059ba7f"


def _fake(name: str, group: str) -> Sample:
    z = np.zeros((1, 8, 8), np.float32)
    return Sample(name, z, z.astype(np.uint8), z.astype(bool), group)


def test_split_is_deterministic_and_independent_of_order():
    samples = [_fake(f"s{i:02d}", f"g{i % 4}") for i in range(45)]
    train, val = split(samples, 0.2, seed=0)
    assert len(val) == 9 and len(train) == 36
    assert not {s.name for s in train} & {s.name for s in val}
    train2, val2 = split(samples[::-1], 0.2, seed=0)
    assert [s.name for s in val] == [s.name for s in val2]
    _, val3 = split(samples, 0.2, seed=1)
    assert [s.name for s in val] != [s.name for s in val3]
    assert split(samples, 0.0)[1] == []


def test_split_by_group_keeps_experiments_apart():
    samples = [_fake(f"s{i:02d}", f"g{i % 5}") for i in range(25)]
    for seed in range(5):
        train, val = split(samples, 0.2, seed=seed, by_group=True)
        assert val and train
        assert not {s.group for s in train} & {s.group for s in val}
    with pytest.raises(ValueError, match="group"):
        split([_fake(f"s{i}", "g") for i in range(5)], 0.2, by_group=True)


def test_split_stratified_draws_from_every_group():
    sizes = {"A": 7, "B": 2, "C": 6, "D": 10}
    samples = [_fake(f"{g}{i}", g) for g, n in sizes.items() for i in range(n)]
    train, val = split(samples, 0.2, seed=0, stratify=True)
    assert len(val) == 5
    assert {s.group for s in train} == set(sizes)
    assert {"A", "C", "D"} <= {s.group for s in val}


def _disc_sample(n: int = 48) -> Sample:
    yy, xx = np.mgrid[:n, :n]
    t = (((yy - 30) ** 2 + (xx - 12) ** 2) < 25).astype(np.uint8)
    x = t.astype(np.float32)[None]
    return Sample("d", x, t[None], np.ones((1, n, n), bool), "g")


def test_patch_sampler_pads_small_images_as_unknown_and_finds_positives():
    s = _disc_sample(48)
    sampler = PatchSampler([s], 64, np.random.default_rng(0), positive_fraction=1.0, augment=False)
    x, t, v = sampler.batch(8)
    assert x.shape == (8, 1, 64, 64) and t.shape == v.shape == (8, 1, 64, 64)
    # the whole image is in every patch, and only the image is known
    assert (v.reshape(8, -1).sum(1) == 48 * 48).all()
    assert (t.reshape(8, -1).sum(1) == s.target.sum()).all()
    assert (t[:, 0].reshape(8, -1).sum(1) > 0).all(), "positive patches must contain the class"


def test_patch_sampler_centres_on_positives_in_large_images():
    n = 512
    t = np.zeros((1, n, n), np.uint8)
    t[0, 400:405, 100:105] = 1  # one tiny object: uniform patches would rarely hit it
    s = Sample("big", np.zeros((1, n, n), np.float32), t, np.ones((1, n, n), bool), "g")
    sampler = PatchSampler([s], 64, np.random.default_rng(1), positive_fraction=0.5)
    hits = [sampler.draw()[1].any() for _ in range(200)]
    assert 0.35 < np.mean(hits) < 0.75


def test_patch_sampler_draws_positives_of_the_class_asked_for():
    n = 512
    t = np.zeros((2, n, n), np.uint8)
    t[0, 10:30, 10:30] = 1  # class 0 top left, class 1 bottom right: no patch holds both
    t[1, 480:490, 480:490] = 1
    s = Sample("two", np.zeros((1, n, n), np.float32), t, np.ones((2, n, n), bool), "g")
    sampler = PatchSampler(
        [s],
        64,
        np.random.default_rng(2),
        positive_fraction=1.0,
        negative_fraction=0.0,
        augment=False,
    )
    for c in (0, 1):
        _, tb, _ = sampler.batch(20, for_class=c)
        assert tb[:, c].reshape(20, -1).any(1).all() and not tb[:, 1 - c].any()
    mixed = sampler.batch(40)[1]  # without for_class: either class
    assert mixed[:, 0].any() and mixed[:, 1].any()


@pytest.mark.data
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent (not shipped)")
def test_real_data_nucleus_only_images_have_unknown_cells(tmp_path):
    src = DATA / "brightfield_aisegcell" / "nucleus_only"
    stem = "fig1-a_b_c_181024TK20_p0002_t00006_z001"
    for suffix in ("_image.png", "_nucleus.tif"):
        os.symlink(src / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    (s,) = load_folder(tmp_path, ["nucleus", "cell"])
    assert s.group == "181024TK20"
    assert s.valid[0].all() and not s.valid[1].any()
    assert 0 < s.target[0].mean() < 0.05
    phase = DATA / "phase_usiigaci"
    os.symlink(phase / "set01_image.tif", tmp_path / "set01_image.tif")
    os.symlink(phase / "set01_cell.tif", tmp_path / "set01_cell.tif")
    p = {x.name: x for x in load_folder(tmp_path, ["cell"])}["set01"]
    assert p.image.shape == (1, 1022, 1024) and 0.1 < p.target.mean() < 0.5


def test_histogram_matching_maps_every_image_onto_the_brightest_training_image():
    rng = np.random.default_rng(3)
    raws = [rng.gamma(k, 40.0, (48, 40)) for k in (1.0, 4.0, 2.0)]  # the second is brightest
    spec = InputSpec(normalisation=Normalisation(low=0.0, high=100.0))
    t = np.zeros((1, 48, 40), np.uint8)
    samples = [Sample(f"s{i}", to_model_input(r, spec), t, t > 0) for i, r in enumerate(raws)]
    train, val, matched_spec = match_to_brightest(samples[:2], samples[2:], spec)
    ref = np.asarray(matched_spec.histogram_reference)
    assert ref.size == 256 and np.all(np.diff(ref) >= 0)
    qs = np.linspace(0, 1, ref.size)
    brightest = samples[1].image
    np.testing.assert_allclose(ref, np.quantile(brightest, qs), atol=1e-5)
    for s in (*train, *val):  # every image now has the reference's distribution
        np.testing.assert_allclose(np.quantile(s.image, qs), ref, atol=0.02)
    # the stored reference reproduces at inference exactly what training saw
    np.testing.assert_allclose(to_model_input(raws[2], matched_spec), val[0].image, atol=1e-6)
    assert not np.allclose(val[0].image, samples[2].image)  # and it did change something
    with pytest.raises(ValueError, match="training images"):
        match_to_brightest([], samples, spec)


def test_samples_are_held_compactly_and_patches_come_out_as_float32():
    """A training set stays in memory for a whole run: soft targets in float16, uniform
    valid flags as a broadcast, labels in the smallest type; patches are float32 again."""
    from napari_cultureseg.core.targets import distances

    labels = np.zeros((64, 64), np.int32)
    labels[8:30, 8:40], labels[34:60, 10:50] = 1, 2
    dist = distances(labels)
    target = np.stack([(labels > 0).astype(np.float32), dist])
    image = np.zeros((1, 64, 64), np.float32)
    s = Sample("a", image, target, np.ones((2, 64, 64), bool), labels={0: labels})
    assert s.target.dtype == np.float16 and s.labels[0].dtype == np.uint8
    assert np.abs(s.target.astype(np.float32) - target).max() < 1e-3
    assert s.valid.shape == (2, 64, 64) and s.valid.all() and s.valid.strides[1:] == (0, 0)
    assert not s.valid.flags.writeable, "a shared flag must not be written through"

    half = np.ones((2, 64, 64), bool)
    half[1, :, :10] = False  # one channel partly unknown: kept pixel by pixel
    mixed = Sample("b", image, target, half)
    assert mixed.valid.strides[1:] != (0, 0) and np.array_equal(mixed.valid, half)
    unknown = Sample("c", image, target, np.stack([half[0], ~half[0]]))
    assert unknown.valid[0].all() and not unknown.valid[1].any()

    sampler = PatchSampler([s], 32, np.random.default_rng(0), augment=False, soft={1: 0})
    x, t, v = sampler.draw()
    assert x.dtype == t.dtype == np.float32 and v.dtype == bool and v.flags.writeable
    assert set(np.unique(t[0])) <= {0.0, 1.0} and 0 < t[1].max() <= 1
