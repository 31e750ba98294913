"""Object scale: diameters, the zoom to a model's training size, its estimate, and the
pipeline around it (training data resampled, segment on the image's own grid, TTA)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile

from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec, ScaleSpec
from napari_cultureseg.core.bundles import Bundle
from napari_cultureseg.core.datasets import load_folder
from napari_cultureseg.core.model_input import InputSpec, Normalisation
from napari_cultureseg.core.patches import scale_zooms
from napari_cultureseg.core.scale import (
    check_zoom,
    estimate_diameter,
    object_diameters,
    pixel_size_of,
    zoom_for,
    zoom_from_mask,
)
from napari_cultureseg.core.segment import augmented, segment
from napari_cultureseg.core.tiling import run_to_end

from ..conftest import TINY_PARAMS


def discs(shape=(160, 200), radius=5, step=32, offset=16):
    """A label image of discs of ``radius`` on a grid."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    k = 0
    for cy in range(offset, shape[0] - int(radius), step):
        for cx in range(offset, shape[1] - int(radius), step):
            k += 1
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return lab


def test_object_diameters_are_equivalent_circle_diameters():
    lab = discs(radius=10)
    d = object_diameters(lab)
    assert d.size == lab.max() and np.allclose(d, 20, atol=1.0)
    assert np.allclose(object_diameters(lab > 0), d)  # a binary mask: its components
    assert object_diameters(np.zeros((8, 8))).size == 0


def test_zoom_for_a_diameter_or_pixel_size_and_absurd_zooms_refused():
    sc = ScaleSpec(diameter=20.0, reference="cell", pixel_size=0.5)
    assert zoom_for(sc, diameter=10) == 2.0
    assert zoom_for(sc, pixel_size=1.0) == 2.0  # bigger pixels: smaller objects: enlarge
    assert zoom_for(sc) == 1.0
    with pytest.raises(ValueError, match="outside"):
        zoom_for(sc, diameter=1)
    with pytest.raises(ValueError, match="positive"):
        zoom_for(sc, diameter=-3)
    with pytest.raises(ValueError, match="does not record"):
        zoom_for(ScaleSpec(), diameter=10)
    with pytest.raises(ValueError, match="outside"):
        check_zoom(float("nan"))


def test_pixel_size_is_read_from_ome_and_resolution_tags(tmp_path):
    img = np.zeros((16, 16), np.uint16)
    tifffile.imwrite(
        tmp_path / "ome.ome.tif",
        img,
        ome=True,
        metadata={"PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65},
    )
    assert pixel_size_of(tmp_path / "ome.ome.tif") == pytest.approx(0.65)
    tifffile.imwrite(
        tmp_path / "res.tif", img, resolution=(1 / 0.25, 1 / 0.25), resolutionunit="CENTIMETER"
    )
    assert pixel_size_of(tmp_path / "res.tif") == pytest.approx(0.25 * 1e4)
    tifffile.imwrite(tmp_path / "plain.tif", img)
    assert pixel_size_of(tmp_path / "plain.tif") is None
    assert pixel_size_of(tmp_path / "missing.png") is None


class ExactModel:
    """Not a network: a 'model' whose probabilities are the image itself (0 or 1), so the
    estimator's own logic (measure, zoom, measure again) is what is tested."""

    def __init__(self, diameter: float):
        self.config = BundleConfig(
            name="exact",
            architecture="unet",
            classes=(ClassSpec("cell", instances=True, fill_holes=False, min_size=0),),
            params={"encoder_depth": 3},
            tile=64,
            overlap=0.25,
            input=InputSpec(normalisation=Normalisation(kind="none")),
            scale=ScaleSpec(diameter=diameter, reference="cell"),
        )

    def predictor(self, device="cpu"):
        return lambda batch: np.clip(batch, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("radius", [5, 10, 20])
def test_estimate_finds_the_objects_size_when_the_predictions_are_exact(radius):
    model = ExactModel(diameter=20.0)
    image = discs(shape=(240, 240), radius=radius, step=4 * radius, offset=2 * radius) > 0
    est = estimate_diameter(model, image.astype(np.float32), method="objects")
    assert est.zoom == pytest.approx(10 / radius, rel=0.1)
    assert est.diameter == pytest.approx(2 * radius, rel=0.1) and est.objects > 0
    assert estimate_diameter(model, np.zeros((64, 64), np.float32)).diameter is None


@pytest.mark.parametrize("radius", [5, 10, 20])
def test_the_coarse_estimate_starts_at_half_size_and_finds_the_same_size(radius):
    model = ExactModel(diameter=20.0)
    image = discs(shape=(240, 240), radius=radius, step=4 * radius, offset=2 * radius) > 0
    est = estimate_diameter(model, image.astype(np.float32), method="coarse")
    assert est.method == "coarse" and est.diameter == pytest.approx(2 * radius, rel=0.15)


def test_a_model_measures_new_images_with_its_own_estimator():
    model = ExactModel(diameter=20.0)
    image = (discs(shape=(240, 240), radius=10, step=40, offset=20) > 0).astype(np.float32)
    assert estimate_diameter(model, image).method == "objects"  # the default
    model.config = replace(model.config, scale=replace(model.config.scale, estimator="coarse"))
    assert estimate_diameter(model, image).method == "coarse"
    assert estimate_diameter(model, image, method="objects").method == "objects"


def test_the_confidence_estimate_picks_one_of_its_candidate_zooms():
    model = ExactModel(diameter=20.0)
    est = estimate_diameter(model, (discs() > 0).astype(np.float32), method="confidence")
    assert est.method == "confidence" and est.zoom in (0.5, 0.71, 1.0, 1.41, 2.0)
    assert estimate_diameter(model, np.zeros((64, 64), np.float32), method="confidence").zoom == 1
    with pytest.raises(ValueError, match="unknown scale estimator"):
        estimate_diameter(model, np.zeros((64, 64), np.float32), method="guess")


def test_segment_at_a_zoom_returns_the_images_own_grid(tiny_bundle):
    img = (discs(radius=6) > 0).astype(np.float32) * 100
    seg = run_to_end(segment(tiny_bundle, img, device="cpu", zoom=2.0))
    assert seg.probabilities.shape[1:] == img.shape and seg.zoom == 2.0
    assert seg.scale == pytest.approx(1 / 4, rel=0.02)  # image pixels per network pixel
    assert seg.masks()["cell"].shape == img.shape
    with pytest.raises(ValueError, match="outside"):
        run_to_end(segment(tiny_bundle, img, device="cpu", zoom=20.0))


@pytest.mark.parametrize("copies", [1, 2, 4, 8])
def test_tta_maps_every_copy_back_exactly(copies):
    rng = np.random.default_rng(0)
    batch = rng.random((2, 1, 32, 48)).astype(np.float32)
    np.testing.assert_allclose(augmented(lambda b: b.copy(), copies)(batch), batch, atol=1e-7)
    # a predictor that is not symmetric changes under averaging: the copies are different
    ramp = np.arange(48, dtype=np.float32)[None, None, None] / 48

    def skewed(b):
        return b * ramp[..., : b.shape[-1]] if b.shape[-1] == 48 else b * 0.5

    out = augmented(skewed, copies)(batch)
    assert np.allclose(out, skewed(batch)) == (copies == 1)
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        augmented(skewed, 3)


def test_training_folders_are_resampled_to_the_training_diameter(tmp_path):
    for i, r in enumerate((4, 8)):  # two images whose cells differ 2x in size
        lab = discs(radius=r, step=8 * r, offset=4 * r)
        img = np.where(lab > 0, 200, 20).astype(np.uint8)
        tifffile.imwrite(tmp_path / f"e{i}_image.tif", img)
        tifffile.imwrite(tmp_path / f"e{i}_cell.tif", lab.astype(np.uint16))
    zooms, measured = scale_zooms(tmp_path, "cell", 16.0, per="image")
    assert measured["e0"] == pytest.approx(8, rel=0.1) and zooms["e0"] == pytest.approx(2, rel=0.1)
    assert zooms["e1"] == pytest.approx(1, rel=0.1)
    cls = ClassSpec("cell", instances=True, separate="distance")
    samples = {s.name: s for s in load_folder(tmp_path, [cls], zoom=zooms)}
    for s in samples.values():
        d = np.median(object_diameters(s.labels[0]))
        assert d == pytest.approx(16, rel=0.12)  # both at the training size now
        assert s.target.shape == (2, *s.shape) and s.target[1].max() == pytest.approx(1.0)
    assert samples["e0"].shape[0] == round(160 * zooms["e0"])


def test_fine_tuning_shows_corrections_at_the_models_training_size(tiny_bundle, monkeypatch):
    from napari_cultureseg.core import training
    from napari_cultureseg.core.datasets import Sample
    from napari_cultureseg.core.versions import fine_tune_job, finetune_config

    parent = Bundle(
        replace(tiny_bundle.config, scale=ScaleSpec(diameter=20.0, reference="cell")),
        tiny_bundle.state_dict(),
    )
    lab = discs(shape=(128, 128), radius=5)
    t = np.stack([lab > 0, np.zeros_like(lab)]).astype(np.uint8)
    s = Sample("s", (lab > 0).astype(np.float32)[None], t, np.ones_like(t, bool))
    seen = []
    real = training.fine_tune

    def spy(model, train, val, config, **kw):
        seen.extend(x.shape for x in train)
        return real(model, train, val, config, **kw)

    monkeypatch.setattr(training, "fine_tune", spy)
    job = fine_tune_job(parent, "tiny", [s], finetune_config(steps=1, threads=1))
    while True:
        try:
            next(job)
        except StopIteration:
            break
    assert len(seen) == 1 and seen[0][0] == pytest.approx(256, rel=0.03)  # 10 px cells at 20 px
    assert zoom_from_mask(parent, lab > 0) == pytest.approx(2.0, rel=0.05)
    assert zoom_from_mask(tiny_bundle, lab > 0) == 1.0  # a model without a scale


def test_bundle_scale_round_trips(tmp_path):
    cfg = BundleConfig(
        "m",
        "unet",
        (ClassSpec("cell", instances=True),),
        params=TINY_PARAMS,
        scale=ScaleSpec(16.0, "cell", {"cell": 16.0}, 0.65, bias=1.07),
    )
    b = Bundle(cfg)
    b.save(tmp_path / "m")
    assert Bundle.load(tmp_path / "m").config.scale == cfg.scale


def test_the_estimate_corrects_for_objects_the_model_draws_too_large():
    """A model that draws its objects 1.25x too large (measured on its validation images:
    ``ScaleSpec.bias``) would take an image's objects for 1.25x larger than they are."""
    image = (discs(shape=(240, 240), radius=10, step=40, offset=20) > 0).astype(np.float32)
    model = ExactModel(diameter=20.0)
    plain = estimate_diameter(model, image, method="objects")
    model.config = replace(model.config, scale=replace(model.config.scale, bias=1.25))
    corrected = estimate_diameter(model, image, method="objects")
    assert corrected.zoom == pytest.approx(1.25 * plain.zoom, rel=0.02)
    assert corrected.diameter == pytest.approx(plain.diameter / 1.25, rel=0.02)


def test_size_ratio_of_predictions_to_truth():
    from napari_cultureseg.core.training.validation import size_ratio

    truth = discs(shape=(240, 240), radius=10, step=40, offset=20)
    fat = discs(shape=(240, 240), radius=11, step=40, offset=20)
    assert size_ratio([fat, fat], [truth, truth]) == pytest.approx(1.1, rel=0.03)
    assert size_ratio([truth], [truth]) == pytest.approx(1.0)
    assert size_ratio([np.zeros_like(truth)], [truth]) is None
