"""Sadanandan et al.'s spheroid model in the engine: bundles, segment(), adversarial fine_tune."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec
from napari_cultureseg.core.bundles import Bundle, bundled_dir
from napari_cultureseg.core.datasets import Sample
from napari_cultureseg.core.model_input import InputSpec, fit_shape, resize_planes
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.tiling import run_to_end
from napari_cultureseg.core.training import TrainConfig, fine_tune, masked_loss, resize_samples

torch = pytest.importorskip("torch")

TINY_NET = {"base": 4, "blocks": 1}
SPHEROID = ClassSpec("spheroid", threshold=120 / 255, min_size=4, largest_only=True)


def tiny_spheroid_config(**kw) -> BundleConfig:
    return BundleConfig(
        name="tiny-spheroid",
        architecture="spheroid-multiscale",
        classes=(SPHEROID,),
        params=TINY_NET,
        input=InputSpec(resize_to=64),
        tile=64,
        **kw,
    )


def test_architecture_registers_itself_on_first_use():
    code = (
        "import sys\n"
        "from napari_cultureseg.core.nets import create_model, output_stride\n"
        "assert 'napari_cultureseg.core.nets.spheroid' not in sys.modules\n"
        "assert output_stride('spheroid-multiscale', {}) == 16\n"
        "assert 'torch' not in sys.modules  # registering builds nothing\n"
        "net = create_model('spheroid-multiscale', in_channels=1, classes=1, base=4, blocks=1)\n"
        "print(type(net).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SpheroidNet"


def test_config_fields_round_trip_and_default_for_old_bundles():
    cfg = tiny_spheroid_config()
    back = BundleConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.input.resize_to == 64 and back.classes[0].largest_only
    old = cfg.to_dict()
    del old["input"]["resize_to"], old["classes"][0]["largest_only"]
    legacy = BundleConfig.from_dict(old)
    assert legacy.input.resize_to is None and not legacy.classes[0].largest_only


def test_shipped_bundles_still_load_and_build():
    found = [p for p in sorted(bundled_dir().iterdir()) if (p / "config.json").is_file()]
    assert found
    for path in found:
        bundle = Bundle.load(path)
        whole = bundle.config.architecture == "spheroid-multiscale"
        # the new fields default off for the tiled models and are set for Sadanandan et al.'s
        assert bundle.config.input.resize_to == (480 if whole else None)
        assert any(c.largest_only for c in bundle.config.classes) == whole
        bundle.build()  # strict load of the weights
        if bundle.config.lineage.get("training", {}).get("adversarial"):
            from napari_cultureseg.core.adversarial import make_discriminator

            disc = make_discriminator(
                bundle.config.input.channels,
                bundle.config.n_outputs,
                **bundle.config.lineage["training"].get("disc_params", {}),
            )
            disc.load_state_dict({k: v.float() for k, v in bundle.aux["discriminator"].items()})


def test_fit_shape_and_resize_planes():
    assert fit_shape((1080, 1080), 480) == (480, 480)
    assert fit_shape((90, 120), 64) == (48, 64)
    x = np.zeros((2, 90, 120), np.float32)
    x[1] = 5.0
    y = resize_planes(x, (48, 64))
    assert y.shape == (2, 48, 64) and y.dtype == np.float32
    assert np.allclose(y[0], 0) and np.allclose(y[1], 5)
    # the engine's input resize is Sadanandan et al.'s downsampling (the oracle)
    from napari_cultureseg.core.spheroid import downsample_input

    img = np.random.default_rng(3).random((150, 150)).astype(np.float32)
    np.testing.assert_allclose(
        resize_planes(img[None], (48, 48))[0], downsample_input(img, 48), atol=1e-6
    )


def test_segment_resizes_whole_image_and_keeps_the_largest_object():
    torch.manual_seed(0)
    bundle = Bundle(tiny_spheroid_config())
    seen = []
    predict = bundle.predictor("cpu")

    def spy(batch):
        seen.append(batch.shape)
        return predict(batch)

    bundle.predictor = lambda device: spy
    image = np.random.default_rng(1).integers(0, 255, (90, 120)).astype(np.uint8)
    seg = run_to_end(segment(bundle, image, device="cpu", runtime="torch"))  # the spied one
    assert seen == [(1, 1, 48, 64)]  # one pass over the resized image (64 on the longer side)
    assert seg.probabilities.shape == (1, 90, 120)
    assert seg.scale == pytest.approx(90 * 120 / (48 * 64))
    # a random network: threshold at a quantile, so that the mask has several objects
    t = float(np.quantile(seg.probabilities, 0.6))
    mask = seg.mask("spheroid", threshold=t)
    assert mask.shape == (90, 120) and mask.any()
    assert ndi.label(mask)[1] == 1
    loose = replace(seg, classes=(replace(SPHEROID, largest_only=False),))
    assert ndi.label(loose.mask("spheroid", threshold=t))[1] > 1  # so the test above can fail


def test_masked_loss_foreground_factor():
    logits = torch.zeros(1, 1, 2, 4)
    t = torch.zeros(1, 1, 2, 4)
    t[..., 0, :2] = 1  # 2 of 8 pixels: W_fg = 6 / 2 = 3, times 3 = 9
    v = torch.ones_like(t)
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, t))  # log 2
    assert float(masked_loss(logits, t, v, fg_weight_factor=3.0)) == pytest.approx(bce)
    logits[..., 0, :2] = 2.0  # foreground right: its loss falls, by 9 / (9·2 + 6) per pixel
    fg = float(torch.nn.functional.softplus(torch.tensor(-2.0)))
    expected = (9 * 2 * fg + 6 * np.log(2)) / (9 * 2 + 6)
    assert float(masked_loss(logits, t, v, fg_weight_factor=3.0)) == pytest.approx(expected)


def test_resize_samples_majority_targets_and_strict_valid():
    t = np.zeros((1, 80, 80), np.uint8)
    t[0, 20:60, 20:60] = 1
    v = np.ones((1, 80, 80), bool)
    v[0, :, :10] = False
    s = Sample("a", np.ones((1, 80, 80), np.float32), t, v)
    small = Sample("b", np.ones((1, 40, 40), np.float32), t[:, :40, :40], v[:, :40, :40])
    out = resize_samples([s, small], 40)
    assert out[1] is small
    r = out[0]
    assert r.shape == (40, 40) and r.target.dtype == np.uint8
    assert abs(int(r.target.sum()) - 400) <= 40  # the 40x40 square, halved
    assert not r.valid[0, :, :5].any() and r.valid[0, :, 8:].all()


def _disc_wells(seeds, size=64):
    """Dark discs in bright 'wells' (the spheroid task in miniature), as samples."""
    out = []
    yy, xx = np.mgrid[:size, :size]
    for seed in seeds:
        rng = np.random.default_rng(seed)
        cy, cx, r = *rng.uniform(size / 3, 2 * size / 3, 2), rng.uniform(size / 8, size / 4)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        x = 0.9 - 0.6 * m + rng.normal(0, 0.05, m.shape)
        out.append(
            Sample(
                f"w{seed}",
                x[None].astype(np.float32),
                m[None].astype(np.uint8),
                np.ones((1, size, size), bool),
            )
        )
    return out


ADV = TrainConfig(
    steps=12,
    batch_size=2,
    patch_size=64,
    lr=3e-3,
    betas=(0.5, 0.99),
    weight_decay=0.0,
    schedule="constant",
    val_every=6,
    early_stop_patience=None,
    fg_weight_factor=3.0,
    weight_clip=(1.0, 1000.0),
    augment=False,
    adversarial=True,
    threads=1,
    device="cpu",
)
ADV_MODEL = replace(tiny_spheroid_config(), name="adv")


def run_to_end_bundle(gen, reports=None):
    """Run a training generator to its end; its reports go to ``reports``."""
    while True:
        try:
            r = next(gen)
        except StopIteration as stop:
            return stop.value
        if reports is not None:
            reports.append(r)


def test_adversarial_fine_tune_learns_stops_and_round_trips(tmp_path):
    train, val = _disc_wells(range(4)), _disc_wells([50])
    reports = []
    bundle = run_to_end_bundle(fine_tune(ADV_MODEL, train, val, ADV), reports)
    assert [r.step for r in reports] == list(range(1, 13))
    lams = [r.adversarial["lambda"] for r in reports]
    assert lams[0] == pytest.approx(8.3e-6) and (np.diff(lams) > 0).all()
    assert all(np.isfinite(r.adversarial["discriminator"]) for r in reports)
    assert np.mean([r.loss for r in reports[-3:]]) < np.mean([r.loss for r in reports[:3]])
    training = bundle.config.lineage["training"]
    assert training["adversarial"] and training["fg_weight_factor"] == 3.0
    assert training["betas"] == [0.5, 0.99]
    # the discriminator travels beside the model, not inside its weights
    fresh = set(Bundle(replace(bundle.config, lineage={})).build().state_dict())
    assert set(bundle.state_dict()) == fresh
    assert set(bundle.aux) == {"discriminator"}
    assert bundle.config.lineage["adversarial"]["discriminator"] == "fresh, λ rising over the run"

    loaded = Bundle.load(bundle.save(tmp_path / "adv"))
    assert loaded.config == bundle.config
    assert (tmp_path / "adv" / "discriminator.safetensors").is_file()
    for k, w in bundle.state_dict().items():
        assert torch.equal(w, loaded.state_dict()[k])
    for k, w in bundle.aux["discriminator"].items():
        assert torch.equal(w, loaded.aux["discriminator"][k])

    # fine-tuning the saved bundle resumes its discriminator, with λ at its end value
    # (disc_lr 0: the discriminator stays exactly the one it was given)
    resumed = []
    again = run_to_end_bundle(
        fine_tune(loaded, train, [], replace(ADV, steps=3, disc_lr=0.0)), resumed
    )
    assert [r.adversarial["lambda"] for r in resumed] == pytest.approx([0.1] * 3)
    assert again.config.lineage["adversarial"]["discriminator"].startswith("resumed")
    for k, w in loaded.aux["discriminator"].items():
        assert torch.equal(w, again.aux["discriminator"][k])
    # with Sadanandan et al.'s per-step rate λ grows by (0.1 - 8.3e-6) / 12000 a step, however
    # short the run, and a resumed run continues from the step its parent reached
    paced = replace(ADV, steps=3, adversarial_lambda_steps=12000)
    first = []
    parent = run_to_end_bundle(fine_tune(ADV_MODEL, train, [], paced), first)
    rate = (0.1 - 8.3e-6) / 12000
    assert [r.adversarial["lambda"] for r in first] == pytest.approx(
        [8.3e-6 + k * rate for k in range(3)]
    )
    assert parent.config.lineage["adversarial"]["lambda_step"] == 3
    more = []
    run_to_end_bundle(fine_tune(parent, train, [], paced), more)
    assert [r.adversarial["lambda"] for r in more] == pytest.approx(
        [8.3e-6 + k * rate for k in range(3, 6)]
    )
    # a parent without one starts a fresh discriminator and the rising schedule
    reports = []
    bare = run_to_end_bundle(
        fine_tune(Bundle(loaded.config, loaded.state_dict()), train, [], replace(ADV, steps=2)),
        reports,
    )
    assert reports[0].adversarial["lambda"] == pytest.approx(8.3e-6)
    assert bare.config.lineage["adversarial"]["discriminator"].startswith("fresh")
    image = (255 * (0.9 - 0.6 * (np.hypot(*np.mgrid[-45:45, -60:60]) < 20))).astype(np.uint8)
    a = run_to_end(segment(bundle, image, device="cpu")).probabilities
    b = run_to_end(segment(loaded, image, device="cpu")).probabilities
    assert a.shape == (1, 90, 120) and np.array_equal(a, b)

    # the adversarial term reaches the model: with a large λ the weights differ from plain training
    def weights(cfg):
        return run_to_end_bundle(
            fine_tune(ADV_MODEL, train, [], replace(cfg, steps=2))
        ).state_dict()

    plain = weights(replace(ADV, adversarial=False))
    strong = weights(replace(ADV, adversarial_lambda=(10.0, 10.0)))
    same = weights(replace(ADV, adversarial_lambda=(0.0, 0.0)))
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    assert not all(torch.equal(plain[k], strong[k]) for k in plain)

    # "stop" ends the adversarial run after the current batch, with its weights
    gen = fine_tune(ADV_MODEL, train, [], replace(ADV, steps=50))
    next(gen)
    next(gen)
    with pytest.raises(StopIteration) as stop:
        gen.send("stop")
    lin = stop.value.value.config.lineage
    assert lin["stopped"] == "user" and lin["steps"] == 2

    # the time budget and early stopping end adversarial runs as they end any other
    timed = replace(ADV, max_seconds=1e-3)
    lin = run_to_end_bundle(fine_tune(ADV_MODEL, train, val, timed)).config.lineage
    assert lin["stopped"] == "time" and lin["steps"] == 1 and len(lin["metrics"]["history"]) == 1
    patient = replace(ADV, steps=50, val_every=1, early_stop_patience=1)
    lin = run_to_end_bundle(fine_tune(ADV_MODEL, train, val, patient)).config.lineage
    assert lin["stopped"] == "early_stop" and lin["steps"] < 50


def test_the_engines_spheroid_loss_and_lambda_are_the_papers():
    """The engine's path with the spheroid recipe's settings, against Sadanandan et al.'s
    reference functions (spheroid.weighted_labels, adversarial_lambda) as oracles."""
    from pathlib import Path

    import yaml

    from napari_cultureseg.core.adversarial import Adversary
    from napari_cultureseg.core.spheroid import adversarial_lambda, weighted_labels
    from napari_cultureseg.core.training.recipes import train_config

    recipe = Path(__file__).parents[2] / "configs" / "spheroid-multiscale.yaml"
    cfg = train_config(yaml.safe_load(recipe.read_text()))
    rng = np.random.default_rng(4)
    mask = np.zeros((1, 1, 40, 40), bool)
    mask[0, 0, 10:22, 8:20] = True  # 9 % foreground: N_bg / N_fg = 10
    logits = torch.tensor(rng.normal(0, 2, mask.shape), dtype=torch.float32)
    t = torch.tensor(mask, dtype=torch.float32)
    engine = masked_loss(
        logits,
        t,
        torch.ones_like(t, dtype=torch.bool),
        class_weighting=cfg.class_weighting,
        weight_clip=cfg.weight_clip,
        fg_weight_factor=cfg.fg_weight_factor,
        dice_weight=cfg.dice_weight,
    )
    w = torch.tensor(weighted_labels(mask))  # the paper's eq. 1, foreground x 3
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
    assert float(engine) == pytest.approx(float((bce * w).sum() / w.sum()), rel=1e-6)

    adv = Adversary(1, 1, lam=cfg.adversarial_lambda, lambda_steps=cfg.adversarial_lambda_steps)
    n = cfg.adversarial_lambda_steps
    for step in (1, 2, 600, n + 1, 3 * n):  # the loop counts steps from 1
        assert adv.lambda_for(0.0, step=step) == pytest.approx(adversarial_lambda(step - 1, n + 1))


def test_the_engines_adversarial_losses_are_the_papers():
    """The training loop's two adversarial losses (the segmenter's masked loss plus
    Adversary.generator_loss; Adversary.step for the discriminator) against Sadanandan
    et al.'s eqs. 2 and 3 as written in spheroid.adversarial_losses (the oracle)."""
    from napari_cultureseg.core.adversarial import Adversary
    from napari_cultureseg.core.spheroid import adversarial_losses, weighted_labels

    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    mask = np.zeros((1, 1, 48, 48), bool)  # batch 1, as the paper trains (the engine
    mask[0, 0, 8:30, 10:28] = True  # weighs each image of a larger batch on its own)
    image = torch.tensor(rng.normal(size=mask.shape), dtype=torch.float32)
    logits = torch.tensor(rng.normal(0, 2, mask.shape), dtype=torch.float32)
    t = torch.tensor(mask, dtype=torch.float32)
    valid = torch.ones_like(t, dtype=torch.bool)
    adv = Adversary(1, 1, lam=(0.01, 0.1), lambda_steps=100)
    engine_seg = masked_loss(
        logits, t, valid, class_weighting=True, weight_clip=(1.0, 1e3), fg_weight_factor=3.0,
        dice_weight=0.0,
    )  # fmt: skip
    term, lam = adv.generator_loss(image, logits, valid, progress=0.0, step=51)
    w = torch.tensor(weighted_labels(mask))
    paper_seg, paper_disc = adversarial_losses(adv.disc, image, logits, t, w, lam)
    assert float(engine_seg + term) == pytest.approx(float(paper_seg), rel=1e-5)
    assert adv.step(image, logits, t, valid) == pytest.approx(float(paper_disc), rel=1e-5)


def test_the_engines_whole_image_path_is_the_papers_post_processing():
    """segment() on a resize_to model against Sadanandan et al.'s post-processing as written
    in spheroid.spheroid_mask (upsample="prob": probabilities resized back, then cleaned
    at full size), the oracle, on the same network-resolution probabilities: a large
    spheroid with a hole, a smaller one and specks."""
    from napari_cultureseg.core.spheroid import spheroid_mask

    yy, xx = np.mgrid[:48, :64]
    p = np.exp(-(((yy - 24) / 9.0) ** 2 + ((xx - 22) / 11.0) ** 2))  # the spheroid
    p = np.maximum(p, 0.8 * np.exp(-(((yy - 12) / 4.0) ** 2 + ((xx - 52) / 4.0) ** 2)))
    p[23:26, 21:24] = 0.1  # a hole, filled by both
    p[40, 5] = p[3, 3] = 0.9  # specks under min_size
    p = p.astype(np.float32)
    bundle = Bundle(tiny_spheroid_config())
    seen = []

    def network(batch):
        seen.append(batch.shape)
        return p[None, None].repeat(len(batch), 0)

    bundle.predictor = lambda device: network
    image = np.random.default_rng(2).integers(0, 255, (90, 120)).astype(np.uint8)
    seg = run_to_end(segment(bundle, image, device="cpu", runtime="torch"))
    assert seen == [(1, 1, 48, 64)]
    engine = seg.masks()["spheroid"]
    spec = bundle.config.classes[0]
    paper = spheroid_mask(p, (90, 120), threshold=spec.threshold, min_size=spec.min_size,
                          upsample="prob")  # fmt: skip
    assert ndi.label(engine)[1] == 1 and engine[45, 40] and not engine[22, 97]
    iou = (engine & paper).sum() / (engine | paper).sum()
    assert iou > 0.99, iou  # the two bilinear resizes differ by < 0.005 in probability
