"""Training on tiny synthetic data: masking, learning, determinism, stopping, lineage."""

from __future__ import annotations

import inspect
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec, DerivedClass
from napari_cultureseg.core.bundles import Bundle
from napari_cultureseg.core.datasets import Sample
from napari_cultureseg.core.model_input import to_model_input
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.tiling import run_to_end
from napari_cultureseg.core.training import (
    Report,
    TrainConfig,
    fine_tune,
    lr_factor,
    masked_loss,
    model_config,
    train_config,
    train_from_config,
)

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]}


def _raw_discs(seed: int, n: int = 96, count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A raw image of bright discs on dark noise, and its exact mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    t = np.zeros((n, n), bool)
    for _ in range(count):
        cy, cx = rng.integers(12, n - 12, 2)
        t |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(5, 10) ** 2
    return (1000 + 250 * rng.standard_normal((n, n)) + 1000 * t).astype(np.float32), t


def _discs(seed: int) -> Sample:
    raw, t = _raw_discs(seed)
    x = to_model_input(raw)  # what segment() will give the model
    return Sample(f"d{seed}", x, t[None].astype(np.uint8), np.ones((1, *t.shape), bool), "g")


TRAIN = [_discs(i) for i in range(6)]
VAL = [_discs(100 + i) for i in range(2)]
MODEL = BundleConfig(
    name="discs",
    architecture="unet",
    classes=(ClassSpec("disc", min_size=0, fill_holes=False),),
    params=TINY,
    tile=64,
)
CFG = TrainConfig(
    steps=40,
    batch_size=4,
    patch_size=64,
    lr=3e-3,
    val_every=20,
    threads=1,
)


def _run(gen):
    """Exhaust a training generator: (reports, returned bundle)."""
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            return reports, stop.value


# ---------------------------------------------------------------- the loss


def test_masked_loss_ignores_unknown_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g, requires_grad=True)
    target = (torch.rand(2, 3, 16, 16, generator=g) > 0.7).float()
    valid = torch.rand(2, 3, 16, 16, generator=g) > 0.4
    valid[:, 2] = False  # a class nobody annotated
    garbage = torch.where(valid, target, 1 - target)  # flip everything behind valid=False
    for kw in ({}, {"class_weighting": False}, {"dice_weight": 0.5}):
        a = masked_loss(logits, target, valid, **kw)
        b = masked_loss(logits, garbage, valid, **kw)
        assert torch.equal(a, b), kw
        other = torch.where(valid, logits, torch.full_like(logits, 30.0))
        assert torch.allclose(a, masked_loss(other, target, valid, **kw)), kw
    masked_loss(logits, target, valid, dice_weight=0.5).backward()
    assert (logits.grad[~valid] == 0).all()
    assert (logits.grad[valid] != 0).any()


def test_masked_loss_is_zero_without_valid_pixels():
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    loss = masked_loss(logits, torch.ones(1, 2, 8, 8), torch.zeros(1, 2, 8, 8, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph


def test_class_weighting_balances_foreground_and_background():
    # 1 positive pixel of 4: W_fg = N_bg / N_fg = 3, so both sides weigh the same
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    valid = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    w = torch.tensor([3.0, 1, 1, 1]).view(1, 1, 2, 2)
    expected = (w * bce).sum() / w.sum()
    assert torch.allclose(masked_loss(logits, target, valid), expected)
    assert torch.allclose(masked_loss(logits, target, valid, class_weighting=False), bce.mean())
    clipped = masked_loss(logits, target, valid, weight_clip=(1.0, 2.0))
    w2 = torch.tensor([2.0, 1, 1, 1]).view(1, 1, 2, 2)
    assert torch.allclose(clipped, (w2 * bce).sum() / w2.sum())


def test_lr_schedules():
    assert lr_factor(0.05, "onecycle", 0.05) == pytest.approx(1.0)
    assert lr_factor(0.0, "onecycle", 0.05) == pytest.approx(0.01)
    assert lr_factor(1.0, "onecycle", 0.05) == pytest.approx(0.01)
    assert lr_factor(0.0, "cosine") == pytest.approx(1.0)
    assert lr_factor(0.5, "cosine") == pytest.approx(0.505)
    assert lr_factor(0.7, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0.5, "linear")


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained():
    reports, bundle = _run(fine_tune(MODEL, TRAIN, VAL, CFG))
    return reports, bundle


def test_training_drives_the_loss_down_and_reports_every_batch(trained):
    reports, _ = trained
    assert [r.step for r in reports] == list(range(1, 41))
    assert all(isinstance(r, Report) and r.total_steps == 40 for r in reports)
    first = np.mean([r.loss for r in reports[:5]])
    last = np.mean([r.loss for r in reports[-5:]])
    assert last < 0.6 * first
    validated = [r for r in reports if r.val_dice is not None]
    assert [r.step for r in validated] == [20, 40]
    assert reports[0].lr < max(r.lr for r in reports)  # warm-up, then decay
    assert reports[-1].lr < max(r.lr for r in reports)


def test_returned_bundle_saves_loads_and_segments_discs(trained, tmp_path):
    reports, bundle = trained
    lin = bundle.config.lineage
    assert lin["parent"] is None and lin["steps"] == 40 and lin["created"]
    assert lin["data"]["train"]["count"] == 6 and lin["data"]["val"]["names"] == ["d100", "d101"]
    best = max((r for r in reports if r.val_dice), key=lambda r: r.val_dice["disc"])
    assert lin["best_step"] == best.step and best.best
    assert lin["metrics"]["val_dice"] == best.val_dice
    assert best.val_dice["disc"] > 0.7

    path = bundle.save(tmp_path / "discs")
    loaded = Bundle.load(path)
    assert loaded.config == bundle.config
    for k, v in bundle.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    raw, truth = _raw_discs(999)
    seg = run_to_end(segment(loaded, raw, device="cpu"))
    pred = seg.masks()["disc"]
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    chance = 2 * truth.mean() / (1 + truth.mean())  # Dice of "everything is a disc"
    assert dice > max(0.7, 2 * chance)


def test_bf16_training_learns_and_saves_plain_weights(tmp_path):
    """bfloat16 autocast with channels-last layout: the discs are still learnt, the lineage
    says bf16, and the saved weights are ordinary row-major float32 tensors."""
    reports, bundle = _run(fine_tune(MODEL, TRAIN, VAL, replace(CFG, precision="bf16")))
    assert np.mean([r.loss for r in reports[-5:]]) < 0.6 * np.mean([r.loss for r in reports[:5]])
    assert bundle.config.lineage["training"]["precision"] == "bf16"
    assert max(r.val_dice["disc"] for r in reports if r.val_dice) > 0.7
    weights = bundle.state_dict()
    assert all(w.is_contiguous() for w in weights.values())
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float32}
    loaded = Bundle.load(bundle.save(tmp_path / "discs-bf16"))
    raw, truth = _raw_discs(999)
    pred = run_to_end(segment(loaded, raw, device="cpu")).masks()["disc"]
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.7


def test_training_measures_how_much_larger_the_model_draws_objects():
    """With objects scored on validation, the kept weights' size ratio (predicted / true
    median diameter) is stored as the scale's bias, which the size estimate corrects for."""
    from napari_cultureseg.core.bundle_config import ScaleSpec

    model = replace(
        MODEL,
        classes=(ClassSpec("disc", min_size=0, fill_holes=False, instances=True),),
        scale=ScaleSpec(diameter=14.0, reference="disc"),
    )
    _, bundle = _run(fine_tune(model, TRAIN, VAL, replace(CFG, select_by="objects")))
    ratio = bundle.config.lineage["metrics"]["val_size_ratio"]
    assert bundle.config.scale.bias == ratio and 0.5 < ratio < 2.0
    _, plain = _run(fine_tune(MODEL, TRAIN[:2], VAL, replace(CFG, steps=2)))
    assert plain.config.scale.bias == 1.0  # no scale, nothing measured


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or auto"):
        TrainConfig(precision="fp16")
    _, bundle = _run(fine_tune(MODEL, TRAIN[:2], [], replace(CFG, steps=2, precision="fp32")))
    assert bundle.config.lineage["training"]["precision"] == "fp32"


def test_garbage_behind_unknown_pixels_changes_nothing():
    """Training with noise where valid=False must equal training with clean targets there."""
    rng = np.random.default_rng(5)
    clean, noisy = [], []
    for s in TRAIN[:4]:
        valid = np.ones_like(s.valid)
        valid[:, :, 48:] = False  # the right half was never reviewed
        garbage = np.where(valid, s.target, rng.integers(0, 2, s.target.shape)).astype(np.uint8)
        clean.append(replace(s, valid=valid))
        noisy.append(replace(s, valid=valid, target=garbage))
    cfg = replace(CFG, steps=8, val_every=100)
    ra, a = _run(fine_tune(MODEL, clean, [], cfg))
    rb, b = _run(fine_tune(MODEL, noisy, [], cfg))
    assert [r.loss for r in ra] == [r.loss for r in rb]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_same_seed_same_run_other_seed_other_run():
    cfg = replace(CFG, steps=6, val_every=100)
    l1 = [r.loss for r in _run(fine_tune(MODEL, TRAIN, [], cfg))[0]]
    l2 = [r.loss for r in _run(fine_tune(MODEL, TRAIN, [], cfg))[0]]
    l3 = [r.loss for r in _run(fine_tune(MODEL, TRAIN, [], replace(cfg, seed=1)))[0]]
    assert l1 == l2
    assert l1 != l3


def test_closing_the_generator_stops_training_at_once():
    threads_before = {t.ident for t in threading.enumerate()}
    torch_threads = torch.get_num_threads()
    gen = fine_tune(MODEL, TRAIN, VAL, replace(CFG, steps=1000, threads=2))
    for _ in range(3):
        report = next(gen)
    gen.close()
    assert report.step == 3
    assert inspect.getgeneratorstate(gen) == inspect.GEN_CLOSED
    assert {t.ident for t in threading.enumerate()} == threads_before
    assert torch.get_num_threads() == torch_threads


def test_time_budget_and_early_stopping_end_training_cleanly():
    reports, bundle = _run(fine_tune(MODEL, TRAIN, VAL, replace(CFG, max_seconds=1e-9)))
    assert len(reports) == 1 and reports[0].val_dice is not None
    assert bundle.config.lineage["stopped"] == "time"
    # a validation image with nothing known scores the same every time: never an
    # improvement, so patience 2 stops after the third validation
    blind = replace(VAL[0], valid=np.zeros_like(VAL[0].valid))
    patient = replace(CFG, steps=100, val_every=5, early_stop_patience=2)
    reports, bundle = _run(fine_tune(MODEL, TRAIN, [blind], patient))
    assert reports[-1].step == 15 and bundle.config.lineage["stopped"] == "early_stop"
    assert bundle.config.lineage["best_step"] == 5


def test_checks_early_in_the_schedule_give_no_kept_weights_when_told():
    """``keep_after``: a validation that scores the same at every check would keep the first
    check's weights; with keep_after 0.5 the first check past half the schedule is kept, and
    the early checks do not count towards early stopping either."""
    blind = replace(VAL[0], valid=np.zeros_like(VAL[0].valid))
    cfg = replace(CFG, steps=20, val_every=5, early_stop_patience=2)
    _, first = _run(fine_tune(MODEL, TRAIN, [blind], cfg))
    assert first.config.lineage["best_step"] == 5
    reports, late = _run(fine_tune(MODEL, TRAIN, [blind], replace(cfg, keep_after=0.5)))
    assert late.config.lineage["best_step"] == 15  # step 10 is at 45 % of the schedule
    assert reports[-1].step == 20 and late.config.lineage["stopped"] == "steps"
    with pytest.raises(ValueError, match="keep_after"):
        replace(CFG, keep_after=1.0)


def test_fine_tuning_a_parent_records_it_and_checks_classes(trained, tmp_path):
    _, parent = trained
    parent.save(tmp_path / "parent")
    parent = Bundle.load(tmp_path / "parent")
    _, child = _run(fine_tune(parent, TRAIN[:2], [], replace(CFG, steps=2)))
    assert child.config.name == parent.config.name  # renamed by whoever saves it
    assert child.config.lineage["parent"] == str(tmp_path / "parent")
    assert child.config.classes == parent.config.classes
    two = [
        replace(s, target=np.repeat(s.target, 2, 0), valid=np.repeat(s.valid, 2, 0)) for s in TRAIN
    ]
    with pytest.raises(ValueError, match="class"):
        next(fine_tune(parent, two, [], CFG))


# ---------------------------------------------------------------- YAML configs


def test_train_from_config_saves_a_float16_bundle_with_its_card(tmp_path):
    import tifffile

    data = tmp_path / "data" / "discs"
    data.mkdir(parents=True)
    for s in [*TRAIN, *VAL]:
        raw, _ = _raw_discs(int(s.name[1:]))
        tifffile.imwrite(data / f"{s.name}_image.tif", raw.astype(np.uint16))
        tifffile.imwrite(data / f"{s.name}_disc.tif", s.target[0])
    config = {
        "name": "discs-yaml",
        "bundle": False,
        "architecture": "unet",
        "params": TINY,
        "classes": [{"name": "disc", "colour": "#ff0000", "instances": True}],
        "derived": [{"name": "rim", "base": "disc", "minus": [], "colour": "#00ff00"}],
        "input": {"channels": 1, "median3": True},
        "tile": 64,
        "scale": {"reference": "disc", "estimator": "coarse"},  # diameter: as in the masks
        "data_root": "data",
        "data": [{"folder": "discs", "use": "split"}],
        "split": {"val_fraction": 0.25, "seed": 0},
        "training": {"steps": 3, "batch_size": 2, "patch_size": 64, "val_every": 3, "threads": 1},
        "card": {"source": "synthetic", "licence": "CC0", "attribution": "the tests"},
    }
    (tmp_path / "discs.yaml").write_text(yaml.safe_dump(config))
    seen = []
    out = tmp_path / "out"
    path = train_from_config(tmp_path / "discs.yaml", out_dir=out, on_report=seen.append)
    assert path == tmp_path / "out" / "discs-yaml" and len(seen) == 3
    b = Bundle.load(path)
    assert b.config.storage_dtype == "float16"
    assert all(v.dtype == torch.float16 for v in b.state_dict().values() if v.is_floating_point())
    assert b.config.card["licence"] == "CC0" and len(b.config.card["validation_ids"]) == 2
    assert b.config.derived == (DerivedClass("rim", "disc", (), "#00ff00"),)
    assert b.config.input.median3 and b.config.classes[0].instances
    assert set(b.config.card["validation_ids"]) == set(b.config.lineage["data"]["val"]["names"])
    assert b.config.scale.estimator == "coarse" and b.config.scale.diameter > 0
    config["scale"]["estimator"] = "guess"
    (tmp_path / "discs.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="scale.estimator"):
        train_from_config(tmp_path / "discs.yaml", out_dir=out)


@pytest.mark.parametrize("name", ["phase-cells", "brightfield-nucleus-cell", "fluorescence-nuclei"])
def test_shipped_training_configs_are_valid(name):
    y = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert y["name"] == name
    model = model_config(y)
    cfg = train_config(y)
    assert model.name == name and model.classes
    assert cfg.patch_size % 32 == 0 and model.tile % 32 == 0
    assert {"source", "licence", "attribution"} <= set(y["card"])
    # the recipe is the one that made the bundled model: same network, same classes
    from napari_cultureseg.core.bundles import load_bundle

    bundled = load_bundle(name).config
    assert bundled.params == model.params and bundled.class_names == model.class_names


def test_weight_average_follows_its_decay_from_a_low_start():
    from napari_cultureseg.core.training.averaging import averaged

    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    avg = averaged(net, 0.9)
    start = net[0].weight.detach().clone()
    expected = start
    for n in range(1, 30):
        with torch.no_grad():
            net[0].weight.add_(1.0)
            net[1].num_batches_tracked.fill_(n)
        avg.update_parameters(net)
        if n > 1:  # the first update copies the network
            d = min(0.9, n / (9 + n))  # (1 + n_averaged) / (10 + n_averaged), n_averaged = n - 1
            expected = d * expected + (1 - d) * net[0].weight.detach()
        else:
            expected = net[0].weight.detach().clone()
        assert torch.allclose(avg.module[0].weight, expected), n
    assert avg.module[1].num_batches_tracked.item() == 29
    assert (avg.module[0].weight < net[0].weight - 2).all()  # it lags behind the network
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=1.0)


def test_training_with_a_weight_average_keeps_the_average():
    """The raw run is the same (same losses); the weights kept are the average's, which
    differ from the last raw weights, still segment the discs, and the lineage says so."""
    cfg = replace(CFG, val_every=100)
    plain_reports, plain = _run(fine_tune(MODEL, TRAIN, [], cfg))
    ema_reports, ema = _run(fine_tune(MODEL, TRAIN, [], replace(cfg, ema=0.9)))
    assert [r.loss for r in ema_reports] == [r.loss for r in plain_reports]
    assert ema.config.lineage["training"]["ema"] == 0.9
    w_plain, w_ema = plain.state_dict(), ema.state_dict()
    assert w_plain.keys() == w_ema.keys()
    assert any(
        not torch.equal(w_plain[k], w_ema[k]) for k in w_plain if w_plain[k].is_floating_point()
    )
    raw, truth = _raw_discs(999)
    pred = run_to_end(segment(ema, raw, device="cpu")).masks()["disc"]
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.7


def test_choose_seeds_takes_the_best_validation_score_and_its_own_on_a_tie():
    from napari_cultureseg.core.training.validation import Validation, choose_seeds

    classes = (
        ClassSpec("cell", instances=True, separate="distance", seed_threshold=0.5),
        ClassSpec("nucleus", instances=True, separate="distance", seed_threshold=0.5),
        ClassSpec("rim"),
    )
    cfg = replace(MODEL, classes=classes)
    v = Validation(
        {},
        {},
        seeds={"cell": {0.3: 0.61, 0.5: 0.58, 0.7: 0.61}, "nucleus": {0.3: 0.7, 0.5: 0.7}},
    )
    new, chosen = choose_seeds(cfg, v)
    # cell: 0.3 and 0.7 tie for the best, equally far from 0.5: the lower one
    assert new.classes[0].seed_threshold == 0.3 and chosen["cell"]["chosen"] == 0.3
    assert new.classes[1].seed_threshold == 0.5  # a tie with its own: kept
    assert new.classes[2] == classes[2] and "rim" not in chosen
    assert chosen["cell"]["sa"] == {"0.3": 0.61, "0.5": 0.58, "0.7": 0.61}
    with pytest.raises(ValueError, match="between 0 and 1"):
        TrainConfig(choose_seeds=(0.5, 1.5))


def test_training_chooses_distance_seeds_on_validation_with_the_kept_weights():
    """Touching discs, a distance channel: after the run the seed threshold is the candidate
    that scored best on the validation images, re-scored with the kept weights (its own
    candidate reproduces the kept validation's SA(0.5)), and the lineage says so."""
    from skimage.measure import label

    from napari_cultureseg.core.targets import targets_from_masks

    spec = ClassSpec("disc", min_size=0, fill_holes=False, instances=True, separate="distance")
    model = replace(MODEL, classes=(spec,))

    def sample(seed):
        raw, t = _raw_discs(seed, count=6)
        target, valid = targets_from_masks({"disc": label(t)}, model.classes, t.shape)
        return Sample(f"d{seed}", to_model_input(raw), target, valid, "g")

    cfg = replace(CFG, select_by="objects", choose_seeds=(0.2, 0.5, 0.8))
    train, val = [sample(i) for i in range(6)], [sample(100), sample(101)]
    _, bundle = _run(fine_tune(model, train, val, cfg))
    metrics = bundle.config.lineage["metrics"]
    seeds = metrics["val_seeds"]["disc"]
    assert set(seeds["sa"]) == {"0.2", "0.5", "0.8"}
    best = max(seeds["sa"].values())
    assert seeds["sa"][str(seeds["chosen"])] == best
    assert bundle.config.classes[0].seed_threshold == seeds["chosen"]
    assert seeds["sa"]["0.5"] == round(metrics["val_sa_0.5"]["disc"], 4)
    assert bundle.config.lineage["training"]["choose_seeds"] == [0.2, 0.5, 0.8]
    # a bundle trained without the option gets the same choice afterwards
    from napari_cultureseg.core.training.validation import with_seeds_chosen

    unchosen = bundle.with_config(classes=(spec,))
    again, chosen = with_seeds_chosen(unchosen, val, (0.2, 0.5, 0.8))
    assert chosen["disc"] == seeds and again.config.classes == bundle.config.classes
    assert again.config.lineage["metrics"]["val_seeds"] == chosen
    _, plain = _run(fine_tune(model, [sample(0)], [sample(100)], replace(CFG, steps=2)))
    assert "val_seeds" not in plain.config.lineage["metrics"]  # not asked: not chosen
