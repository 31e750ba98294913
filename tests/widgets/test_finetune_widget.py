"""Fine-tuning through the widget in a real viewer, on corrections painted by hand."""

import numpy as np
import pytest

from napari_cultureseg._widgets.finetune import FinetuneWidget
from napari_cultureseg._widgets.segment import SegmentWidget
from napari_cultureseg.core.bundles import find_bundle, load_bundle
from napari_cultureseg.core.synth import phase_culture


def _segment_a_field(viewer, seg, qtbot, shape, seed):
    """Add a synthetic phase-contrast field and segment it with the tiny model."""
    seg.model.reset_choices()
    seg.model.value = "tiny"
    img, truth = phase_culture(shape, seed=seed)
    viewer.add_image(img, name="field")
    seg.image.reset_choices()
    seg.start()
    qtbot.waitUntil(lambda: seg.worker is None and seg.counter is None, timeout=60_000)
    return img, truth


@pytest.fixture
def widgets(make_napari_viewer, tiny_bundle, qtbot):
    viewer = make_napari_viewer(show=True)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    img, truth = _segment_a_field(viewer, seg, qtbot, (192, 192), seed=2)
    ft = _correct_and_open_finetune(viewer, seg, qtbot, truth)
    ft.preview_every.value = 5
    return viewer, seg, ft, img, truth


def _correct_and_open_finetune(viewer, seg, qtbot, truth):
    """The user corrects the cell layer to the truth, accepts the whole view and opens
    Fine-tune on ``tiny`` (small patches and batches)."""
    viewer.layers["field · cell"].data = (truth > 0).astype(np.uint8)
    viewer.reset_view()
    qtbot.wait(50)
    seg.accept_view()
    ft = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(ft, name="Fine-tune")
    ft.model.reset_choices()
    ft.model.value = "tiny"
    ft.patch.value, ft.batch.value = 64, 2
    return ft


def test_fine_tune_makes_a_new_version_used_by_the_next_segment(widgets, qtbot):
    viewer, seg, ft, img, truth = widgets
    assert "field" in ft.sources.value
    ft.steps.value = 20
    ft.start()
    assert ft.worker is not None
    qtbot.waitUntil(lambda: ft.worker is None, timeout=180_000)
    assert ft.last is not None, ft.eta.value
    assert ft.last.name == "tiny.v2" and find_bundle("tiny.v2")
    lineage = load_bundle("tiny.v2").config.lineage
    assert lineage["parent"] == "tiny" and lineage["steps"] == 20
    assert set(lineage["metrics"]["parent_val_dice"]) == {"cell", "debris"}  # beside its parent
    assert "cell Dice" in ft.result_label.value and "parent" in ft.result_label.value
    assert len(ft.plot.series["loss"][1]) == 20  # one point per batch
    assert "field · preview (training)" in viewer.layers
    assert seg.model.value == "tiny.v2"  # selected for the next Segment
    seg.start()
    qtbot.waitUntil(lambda: seg.worker is None and seg.counter is None, timeout=60_000)
    assert viewer.layers["field · cell"].metadata["cultureseg"]["class"] == "cell"
    # one click back to the parent
    ft.versions.value = "tiny"
    ft.use_version()
    assert seg.model.value == "tiny"


def test_stop_mid_run_keeps_a_version_within_a_batch(widgets, qtbot):
    viewer, seg, ft, img, truth = widgets
    ft.steps.value = 5000
    ft.preview_every.value = 0
    # batches that take longer than the GUI needs to show a report: the steps the dock has
    # seen at Stop are within a batch of the worker's (tiny 64-px batches raced ahead by 3)
    ft.patch.value, ft.batch.value = 192, 4
    ft.start()
    qtbot.waitUntil(lambda: len(ft.plot.series["loss"][1]) > 0, timeout=60_000)  # first batch done
    seen = len(ft.plot.series["loss"][1])
    ft.stop()
    qtbot.waitUntil(lambda: ft.worker is None, timeout=30_000)
    assert ft.last is not None and ft.last.steps <= seen + 2, (seen, ft.last.steps)
    if ft.last.path is not None:  # the weights at Stop beat the parent: a version
        assert load_bundle(ft.last.name).config.lineage["stopped"] == "user"
    else:  # they did not: said plainly, nothing saved, the parent stays selected
        assert "No new version" in ft.result_label.value and seg.model.value == "tiny"


def test_error_in_training_leaves_viewer_layers_and_workspace_intact(widgets, qtbot, monkeypatch):
    viewer, seg, ft, img, truth = widgets
    import napari_cultureseg.core.training as training

    def broken(*a, **k):
        raise FloatingPointError("the loss became nan at step 1; lower the learning rate")
        yield

    monkeypatch.setattr(training, "fine_tune", broken)
    before = {layer.name: np.array(layer.data) for layer in viewer.layers}
    corr = next(iter(seg.corrections.values()))
    reviewed = corr.ws.reviewed["cell"].copy()
    ft.start()
    qtbot.waitUntil(lambda: ft.worker is None, timeout=60_000)
    assert "lower the learning rate" in ft.eta.value and ft.start_button.enabled
    assert {layer.name for layer in viewer.layers} == set(before)
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    np.testing.assert_array_equal(corr.ws.reviewed["cell"], reviewed)
    assert ft.last is None and "tiny.v2" not in ft.versions.choices


def test_a_runtime_error_in_the_worker_is_shown_and_the_widget_works_again(
    widgets, qtbot, monkeypatch
):
    """torch reports out-of-memory as RuntimeError, which superqt would swallow whole."""
    viewer, seg, ft, img, truth = widgets
    import napari_cultureseg.core.training as training

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield

    monkeypatch.setattr(training, "fine_tune", oom)
    ft.start()
    qtbot.waitUntil(lambda: ft.worker is None, timeout=60_000)
    assert "out of memory" in ft.eta.value
    assert ft.start_button.enabled and not ft.stop_button.enabled


def test_no_corrections_is_a_clear_error(make_napari_viewer, tiny_bundle):
    viewer = make_napari_viewer()
    ft = FinetuneWidget(viewer)
    ft.start()
    assert ft.worker is None and "no corrections" in ft.eta.value


def test_saved_workspaces_of_closed_images_can_be_learnt_from(
    make_napari_viewer, tiny_bundle, tmp_path, cultureseg_home
):
    import tifffile

    from napari_cultureseg.core.workspace import Workspace
    from napari_cultureseg.core.workspace_files import WorkspaceError, key_for_path

    img, truth = phase_culture((96, 128), seed=3)
    path = tmp_path / "closed_field.tif"
    tifffile.imwrite(path, img)
    ws = Workspace.open(
        key_for_path(path),
        image_name=path.name,
        image_path=path,
        shape=(96, 128),
        classes=[("cell", "#39ff14")],
    )
    ws.set_mask("cell", truth > 0, kind="segment")
    ws.accept_region("cell", (0, 0, 48, 128))
    ws.save()
    gone = tmp_path / "gone.tif"
    tifffile.imwrite(gone, img)
    ws2 = Workspace.open(
        key_for_path(gone),
        image_name=gone.name,
        image_path=gone,
        shape=(96, 128),
        classes=[("cell", "#39ff14")],
    )
    ws2.accept_region("cell", (0, 0, 10, 10))
    ws2.save()
    gone.unlink()

    viewer = make_napari_viewer()
    ft = FinetuneWidget(viewer)
    assert ws.key in ft.saved.choices and ws2.key in ft.saved.choices
    assert any("closed_field.tif" in label for label, _ in ft._saved_choices())
    ft.saved.value = [ws.key]
    bundle = load_bundle("tiny")
    (sample,) = ft.samples(bundle)
    assert sample.target.shape == (2, 96, 128)  # cell, debris (unknown in this workspace)
    np.testing.assert_array_equal(sample.target[0], truth > 0)
    assert (
        sample.valid[0, :48].all() and not sample.valid[0, 48:].any() and not sample.valid[1].any()
    )
    # a workspace whose image file is gone: a clear error, nothing else changes
    ft.saved.value = [ws2.key]
    with pytest.raises(WorkspaceError, match="open the image in napari"):
        ft.samples(bundle)
    ft.start()
    assert ft.worker is None and "open the image" in ft.eta.value
    assert len(viewer.layers) == 0


def test_fine_tune_learns_from_corrections_without_the_segment_dock(
    make_napari_viewer, tiny_bundle
):
    """The session, not the Segment dock, holds the open workspaces."""
    from napari_cultureseg._widgets._session import session_for

    viewer = make_napari_viewer()
    img, truth = phase_culture((96, 96), seed=3)
    layer = viewer.add_image(img, name="field")
    from napari_cultureseg._widgets._segment_job import current_plane
    from napari_cultureseg.core.bundle_config import ClassSpec

    plane, index = current_plane(viewer, layer)
    ft = FinetuneWidget(viewer)
    corr = session_for(viewer).corrections_for(layer, plane, index, [ClassSpec("cell")])
    corr.ws.set_mask("cell", truth > 0, kind="segment")
    corr.ws.accept_region("cell", (0, 0, 96, 96))
    ft.describe_sources()
    assert "field" in ft.sources.value
    assert len(ft.samples(load_bundle("tiny"))) == 1


def test_the_sources_list_follows_corrections_made_while_the_dock_is_open(
    make_napari_viewer, tiny_bundle, qtbot
):
    viewer = make_napari_viewer(show=True)
    seg = SegmentWidget(viewer)
    ft = FinetuneWidget(viewer)  # open first: it must not keep showing "0 px"
    viewer.window.add_dock_widget(seg, name="Segment")
    viewer.window.add_dock_widget(ft, name="Fine-tune")
    _segment_a_field(viewer, seg, qtbot, (96, 96), seed=3)
    assert "cell 0 px" in ft.sources.value, ft.sources.value  # nothing reviewed yet
    viewer.reset_view()
    seg.accept_view()
    n = seg.corrections_for(viewer.layers["field"]).reviewed_pixels()["cell"]
    assert n > 0 and f"cell {n} px" in ft.sources.value, ft.sources.value


def test_the_new_version_cuts_objects_at_the_users_splitting(
    make_napari_viewer, cultureseg_home, qtbot
):
    """A user who moved a class's splitting before fine-tuning gets a version that cuts
    objects the same way: the level is saved in it and the Segment dock starts there."""
    from dataclasses import replace

    import torch

    from napari_cultureseg.core.bundles import Bundle, user_models_dir

    from ..conftest import tiny_config

    cfg = tiny_config()
    cell = replace(cfg.classes[0], separate="distance", seed_threshold=0.5)
    torch.manual_seed(0)
    Bundle(replace(cfg, classes=(cell, *cfg.classes[1:]))).save(user_models_dir() / "tiny")
    viewer = make_napari_viewer(show=True)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    img, truth = _segment_a_field(viewer, seg, qtbot, (192, 192), seed=2)
    seg._splitting["cell"].value = 0.7  # released: the objects are cut anew
    assert seg.session.splitting == {"tiny": {"cell": 0.7}}
    qtbot.waitUntil(lambda: seg.counter is None, timeout=60_000)
    ft = _correct_and_open_finetune(viewer, seg, qtbot, truth)
    ft.steps.value = 20
    ft.start()
    qtbot.waitUntil(lambda: ft.worker is None, timeout=180_000)
    assert ft.last is not None and ft.last.name == "tiny.v2", ft.result_label.value
    assert load_bundle("tiny.v2").config.classes[0].seed_threshold == 0.7
    assert load_bundle("tiny").config.classes[0].seed_threshold == 0.5  # the parent unchanged
    assert "keeps your splitting cell 0.7" in ft.result_label.value
    assert seg.model.value == "tiny.v2"
    seg.start()
    qtbot.waitUntil(lambda: seg.worker is None and seg.counter is None, timeout=60_000)
    assert seg._splitting["cell"].value == 0.7  # the new version's own level
