"""Fine-tuning on a user's corrections must not undo what the parent learnt."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_cultureseg.core.bundles import Bundle
from napari_cultureseg.core.training import fine_tune
from napari_cultureseg.core.versions import (
    at_training_scale,
    fine_tune_job,
    finetune_config,
    next_version_name,
    with_parent_loss,
)

from .test_training import CFG, MODEL, TRAIN, VAL, _run


@pytest.fixture(scope="module")
def parent():
    _, bundle = _run(fine_tune(MODEL, TRAIN, VAL, replace(CFG, steps=30)))
    return bundle


def _bn_stats(bundle_or_net):
    net = bundle_or_net.build() if isinstance(bundle_or_net, Bundle) else bundle_or_net
    return [
        m.running_mean.clone()
        for m in net.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]


def test_freeze_norm_keeps_the_parents_batchnorm_statistics(parent):
    cfg = replace(CFG, steps=5, val_every=100)
    _, frozen = _run(fine_tune(parent, TRAIN[:1], [], replace(cfg, freeze_norm=True)))
    _, moving = _run(fine_tune(parent, TRAIN[:1], [], replace(cfg, freeze_norm=False)))
    before, kept, moved = _bn_stats(parent), _bn_stats(frozen), _bn_stats(moving)
    assert before and all(torch.equal(a, b) for a, b in zip(before, kept, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before, moved, strict=True))


def test_keep_parent_if_better_never_returns_a_worse_model(parent):
    # a learning rate that wrecks the network: the parent's weights must come back
    wild = replace(
        CFG, steps=6, val_every=3, lr=5.0, schedule="constant", keep_parent_if_better=True
    )
    reports, child = _run(fine_tune(parent, TRAIN[:2], VAL, wild))
    assert child.config.lineage["best_step"] == 0
    assert child.config.lineage["metrics"]["history"][0]["step"] == 0
    for k, w in parent.build().state_dict().items():
        torch.testing.assert_close(child.build().state_dict()[k], w)
    # without the guard the wrecked weights are what comes back
    _, wrecked = _run(fine_tune(parent, TRAIN[:2], VAL, replace(wild, keep_parent_if_better=False)))
    assert wrecked.config.lineage["best_step"] > 0


def test_fine_tuning_keeps_the_loss_the_parent_was_trained_with(parent):
    recorded = parent.config.lineage["training"]
    assert recorded["class_weighting"] == CFG.class_weighting
    cfg = with_parent_loss(
        parent, finetune_config(class_weighting=not CFG.class_weighting, dice_weight=0.7)
    )
    assert cfg.class_weighting == CFG.class_weighting and cfg.dice_weight == CFG.dice_weight
    assert cfg.freeze_norm and cfg.keep_parent_if_better and cfg.schedule == "cosine"
    # a parent with no recorded recipe keeps the config's
    bare = Bundle(replace(parent.config, lineage={}), parent._state)
    assert with_parent_loss(bare, cfg) == cfg


def _finish(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_fine_tune_job_saves_a_better_version_with_the_parents_score(cultureseg_home):
    from napari_cultureseg.core.bundles import user_models_dir

    torch.manual_seed(0)
    Bundle(MODEL).save(user_models_dir() / "discs")  # untrained: fine-tuning beats it
    base = Bundle.load(user_models_dir() / "discs")
    samples = [replace(s, valid=np.ones_like(s.valid)) for s in TRAIN[:3]]
    assert next_version_name("discs") == "discs.v2"
    cfg = finetune_config(
        steps=30, val_every=10, threads=1, patch_size=64, batch_size=4, lr=3e-3, freeze_norm=False
    )
    result = _finish(fine_tune_job(base, "discs", samples, cfg))
    assert result.path is not None, result
    assert result.name == "discs.v2" and next_version_name("discs") == "discs.v3"
    saved = Bundle.load(result.path)
    assert saved.config.lineage["parent"] == "discs"
    assert "disc" in saved.config.lineage["metrics"]["parent_val_dice"]
    assert np.mean(list(result.dice.values())) > np.mean(list(result.parent_dice.values()))


def test_fine_tune_job_saves_nothing_when_the_parent_stays_better(parent, cultureseg_home):
    from napari_cultureseg.core.bundles import user_models_dir

    parent.save(user_models_dir() / "discs")
    base = Bundle.load(user_models_dir() / "discs")
    samples = [replace(s, valid=np.ones_like(s.valid)) for s in TRAIN[:2]]
    wild = finetune_config(
        steps=6, val_every=3, threads=1, patch_size=64, batch_size=2, lr=0.3, schedule="constant"
    )
    result = _finish(fine_tune_job(base, "discs", samples, wild))
    assert result.path is None and result.parent == "discs"
    assert next_version_name("discs") == "discs.v2"  # nothing was saved
    assert not (user_models_dir() / "discs.v2").exists()


def _painted(samples):
    """Samples as corrections painted in napari give them to a distance model: the mask
    known, its distance channel not (Workspace.samples)."""
    out = []
    for s in samples:
        target = np.stack([s.target[0], np.zeros_like(s.target[0])]).astype(np.float32)
        valid = np.stack([np.ones_like(s.valid[0]), np.zeros_like(s.valid[0])])
        out.append(replace(s, target=target, valid=valid))
    return out


def test_fine_tune_job_learns_a_distance_model_from_painted_masks(cultureseg_home):
    """The bundled real-data models split objects by a distance channel; corrections
    painted in napari know the mask only (Workspace.samples: distance unknown)."""
    from napari_cultureseg.core.bundles import user_models_dir

    spec = replace(MODEL.classes[0], instances=True, separate="distance")
    torch.manual_seed(0)
    Bundle(replace(MODEL, classes=(spec,))).save(user_models_dir() / "ddiscs")
    base = Bundle.load(user_models_dir() / "ddiscs")
    samples = _painted(TRAIN[:2])
    cfg = finetune_config(steps=4, val_every=2, threads=1, patch_size=64, batch_size=2)
    result = _finish(fine_tune_job(base, "ddiscs", samples, cfg))
    assert result.steps == 4 and "disc" in result.parent_dice


def test_a_new_version_keeps_the_splitting_the_user_set_for_its_parent(cultureseg_home):
    """The Segment dock's splitting of the parent becomes the new version's own seed
    threshold (in napari and in the CLI); a class that takes none is refused at once."""
    from napari_cultureseg.core.bundles import user_models_dir

    spec = replace(MODEL.classes[0], instances=True, separate="distance", seed_threshold=0.5)
    torch.manual_seed(0)
    Bundle(replace(MODEL, classes=(spec,))).save(user_models_dir() / "ddiscs")
    base = Bundle.load(user_models_dir() / "ddiscs")
    samples = _painted(TRAIN[:3])
    cfg = finetune_config(
        steps=30, val_every=10, threads=1, patch_size=64, batch_size=4, lr=3e-3, freeze_norm=False
    )
    result = _finish(fine_tune_job(base, "ddiscs", samples, cfg, splitting={"disc": 0.7}))
    assert result.path is not None, result
    saved = Bundle.load(result.path)
    assert saved.config.classes[0].seed_threshold == 0.7
    assert saved.config.lineage["splitting"] == {"disc": 0.7} == result.splitting
    assert Bundle.load(user_models_dir() / "ddiscs").config.classes[0].seed_threshold == 0.5
    # a splitting the parent cannot take: refused before a step is trained or a file made
    plain = Bundle(MODEL)
    with pytest.raises(ValueError, match="splitting"):
        next(fine_tune_job(plain, "discs", samples, cfg, splitting={"disc": 0.7}))
    assert not (user_models_dir() / "discs.v2").exists()


def test_corrections_zoomed_to_the_training_size_keep_their_distance_values():
    """A user's objects twice the size the model learnt are halved for fine-tuning;
    the distance channel must stay a distance (values between 0 and 1), not a mask."""
    from napari_cultureseg.core.bundle_config import ScaleSpec
    from napari_cultureseg.core.datasets import Sample
    from napari_cultureseg.core.targets import distances

    spec = replace(MODEL.classes[0], instances=True, separate="distance")
    cfg = replace(MODEL, classes=(spec,), scale=ScaleSpec(diameter=20.0, reference="disc"))
    yy, xx = np.mgrid[:160, :160]
    labels = ((yy - 50) ** 2 + (xx - 50) ** 2 < 20**2).astype(np.int32)  # 40 px across
    labels[(yy - 110) ** 2 + (xx - 100) ** 2 < 20**2] = 2
    target = np.stack([labels > 0, distances(labels)]).astype(np.float32)
    sample = Sample(
        "big", np.zeros((1, 160, 160), np.float32), target, np.ones((2, 160, 160), bool)
    )
    (zoomed,) = at_training_scale(Bundle(cfg), [sample])
    assert zoomed.image.shape[1:] == (80, 80)  # objects of 40 px brought to 20 px
    d = zoomed.target[1][zoomed.target[0] > 0]
    inner = (d > 0.05) & (d < 0.95)
    assert inner.mean() > 0.5  # a ramp from the outline to the centre, not a plateau
    assert d.max() > 0.9 and np.all(zoomed.target[1][zoomed.target[0] == 0] == 0)
