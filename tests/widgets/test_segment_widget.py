"""The Segment widget in a real napari viewer (run under Xvfb)."""

import numpy as np
import pytest

from napari_cultureseg._widgets.segment import SegmentWidget
from napari_cultureseg.core.synth import phase_culture


@pytest.fixture
def widget(make_napari_viewer, tiny_bundle):
    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    w.model.reset_choices()
    w.model.value = "tiny"
    return viewer, w


def run(qtbot, w, timeout=60_000):
    w.start()
    assert w.worker is not None, w.status.value  # it runs in a thread, not inline
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)  # `finished` has fired
    counted(qtbot, w)


def counted(qtbot, w):
    """Wait for the objects to be counted (in their own worker thread)."""
    qtbot.waitUntil(lambda: w.counter is None, timeout=60_000)


def test_segment_adds_one_overlapping_labels_layer_per_class(widget, qtbot):
    viewer, w = widget
    img, _ = phase_culture((300, 260), seed=0)
    viewer.add_image(img, name="well")
    w.image.reset_choices()
    assert w.tile.value == 128  # taken from the model
    run(qtbot, w)
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "well",
        "well · cell",
        "well · debris",
        "well · cell objects",
    ]  # cells are counted
    # the brush paints the first class, not the objects layer the count added after it
    assert viewer.layers.selection.active.name == "well · cell"
    for cls, colour in (("cell", "#39ff14"), ("debris", "#ff00ff")):
        layer = viewer.layers[f"well · {cls}"]
        assert layer.visible and layer.data.shape == (300, 260)
        assert layer.metadata["cultureseg"]["class"] == cls
        np.testing.assert_allclose(
            layer.colormap.map(np.array([1]))[0][:3],
            np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]),
            atol=0.01,
        )
        np.testing.assert_array_equal(layer.data, w.result.masks()[cls])
    assert w.progress.value == 100 and w.run_button.enabled and not w.stop_button.enabled
    assert [s.label for s in w.thresholds] == ["cell", "debris"]  # no distance map: no splitting

    # segmenting again updates the same layers instead of piling up new ones
    run(qtbot, w)
    assert [layer.name for layer in viewer.layers] == names


def test_the_chosen_model_is_built_before_the_first_press(widget, qtbot):
    from napari_cultureseg.core.bundles import load_bundle

    viewer, w = widget
    bundle = load_bundle("tiny")
    # the dock builds the network once it is on screen, not when Segment is pressed
    qtbot.waitUntil(lambda: "cpu" in bundle._nets, timeout=10_000)
    assert w.worker is None and not viewer.layers  # nothing else happened


def test_segments_the_plane_on_screen(widget, qtbot, tiny_bundle):
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    viewer, w = widget
    stack = np.stack([phase_culture((128, 128), seed=s)[0] for s in range(3)])
    viewer.add_image(stack, name="movie")
    w.image.reset_choices()
    viewer.dims.set_current_step(0, 2)
    run(qtbot, w)
    expected = run_to_end(segment(tiny_bundle, stack[2], tile=128)).masks()["cell"]
    other = run_to_end(segment(tiny_bundle, stack[0], tile=128)).masks()["cell"]
    assert not np.array_equal(expected, other)
    np.testing.assert_array_equal(viewer.layers["movie · cell"].data, expected)


def test_stop_leaves_the_layers_untouched(widget, qtbot):
    viewer, w = widget
    viewer.add_image(np.random.default_rng(0).random((1024, 1024)).astype(np.float32), name="big")
    w.image.reset_choices()
    w.tile.value = 64
    w.overlap.value = 0.5
    w.start()
    with qtbot.waitSignal(w.worker.yielded, timeout=30_000):
        pass
    worker = w.worker
    w.stop()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert "stopped" in w.status.value and w.run_button.enabled


def test_no_image_gives_a_clear_error_and_changes_nothing(widget, qtbot):
    viewer, w = widget
    w.start()
    assert w.worker is None and "open an image" in w.status.value
    assert len(viewer.layers) == 0 and w.run_button.enabled


def test_error_inside_the_worker_is_shown_and_viewer_survives(widget, qtbot, monkeypatch):
    viewer, w = widget
    viewer.add_image(np.random.default_rng(1).random((64, 64)), name="img")
    w.image.reset_choices()
    import napari_cultureseg._widgets._segment_job as seg_mod

    def boom(*a, **k):
        raise RuntimeError("out of memory (simulated)")
        yield

    monkeypatch.setattr(seg_mod, "segment", boom)
    run(qtbot, w)
    assert "out of memory" in w.status.value
    assert [layer.name for layer in viewer.layers] == ["img"] and w.run_button.enabled


def test_objects_are_counted_from_the_corrected_mask(widget, qtbot):
    viewer, w = widget
    img, _ = phase_culture((160, 160), seed=1)
    viewer.add_image(img, name="well")
    w.image.reset_choices()
    run(qtbot, w)
    objects = viewer.layers["well · cell objects"]
    assert not objects.visible and not objects.editable  # counts, not something to paint on
    n = int(objects.data.max())
    assert f"cell {n}" in w.status.value
    np.testing.assert_array_equal(
        objects.data > 0, w.result.instances("cell", viewer.layers["well · cell"].data > 0) > 0
    )
    # the user draws two separate cells in an empty corner and counts again
    cell = viewer.layers["well · cell"]
    data = cell.data.copy()
    data[:40, :40] = 0
    data[5:15, 5:15] = 1
    data[25:35, 25:35] = 1
    cell.data = data
    w.count_button.changed.emit(True)
    counted(qtbot, w)
    corner = objects.data[:36, :36]
    assert corner[10, 10] > 0 and corner[30, 30] > 0 and corner[10, 10] != corner[30, 30]
    assert not corner[20, 20]
    assert w.status.value.startswith("objects: cell ")


def test_without_threads_segment_and_count_run_inline(widget, monkeypatch):
    """CULTURESEG_NOTHREADS=1 (debugging, profiling): no worker; the layers are there at once."""
    viewer, w = widget
    monkeypatch.setenv("CULTURESEG_NOTHREADS", "1")
    img, _ = phase_culture((160, 160), seed=1)
    viewer.add_image(img, name="well")
    w.image.reset_choices()
    w.start()
    assert w.worker is None and w.counter is None
    objects = viewer.layers["well · cell objects"].data
    np.testing.assert_array_equal(
        objects, w.result.instances("cell", viewer.layers["well · cell"].data > 0)
    )
    assert f"objects: cell {int(objects.max())}." in w.status.value


def test_grow_tiles_box_decides_the_tile_count(widget, qtbot):
    # tiny: 128² tiles, overlap 0.25 (32 px); a 256² image takes 2 × 2 tiles of 144²
    # when they may grow, 3 × 3 of 128² when not
    viewer, w = widget
    img, _ = phase_culture((256, 256), seed=1)
    viewer.add_image(img, name="well")
    w.image.reset_choices()
    totals = []
    shown = w._on_progress

    def spy(p):
        totals.append(p.total)
        shown(p)

    w._on_progress = spy
    assert w.fit_tile.value  # on by default
    run(qtbot, w)
    grown = set(totals)
    totals.clear()
    w.fit_tile.value = False
    assert w.request().fit_tile is False
    run(qtbot, w)
    assert (grown, set(totals)) == ({4}, {9})
    assert viewer.layers["well · cell"].data.shape == (256, 256)


@pytest.fixture
def phase_segmented(make_napari_viewer, culture_sample, qtbot):
    """The bundled phase-cells model run on the synthetic sample at its own cell size."""
    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    w.model.reset_choices()
    w.model.value = "phase-cells"
    viewer.add_image(culture_sample, name="well")
    w.image.reset_choices()
    w.diameter.value = 40.0  # the model's own cell size: no estimate
    run(qtbot, w)
    return viewer, w


def test_splitting_cuts_the_objects_anew_and_leaves_the_masks(phase_segmented, qtbot):
    """The bundled phase-contrast model separates touching cells by a distance map: its
    class gets a splitting slider, which cuts the objects anew and leaves the mask."""
    viewer, w = phase_segmented
    assert [s.label for s in w.thresholds] == ["cell", "↳ splitting"]
    split = w._splitting["cell"]
    assert split.value == 0.5  # the model's own
    mask = viewer.layers["well · cell"].data.copy()
    objects = viewer.layers["well · cell objects"]
    counts = {0.5: int(objects.data.max())}
    for level in (0.3, 0.7):
        split.value = level
        counted(qtbot, w)
        expected = w.result.with_seeds({"cell": level}).instances("cell", mask > 0)
        np.testing.assert_array_equal(objects.data, expected)
        counts[level] = int(expected.max())
        assert f"cell splitting {level:g}" in w.status.value
    assert counts[0.7] != counts[0.5]  # it changes the objects ...
    np.testing.assert_array_equal(viewer.layers["well · cell"].data, mask)  # ... not the mask
    assert w.session.splitting == {"phase-cells": {"cell": 0.7}}  # for the Plate dock
    # the next Segment keeps the user's splitting
    run(qtbot, w)
    assert w._splitting["cell"].value == 0.7
    np.testing.assert_array_equal(
        objects.data, w.result.with_seeds({"cell": 0.7}).instances("cell", mask > 0)
    )


def test_objects_are_cut_in_a_worker_and_the_newest_splitting_wins(
    phase_segmented, qtbot, monkeypatch
):
    """Cutting a whole well into objects takes seconds: it runs off the GUI thread, and a
    splitting moved again while a count runs replaces it (the layer shows the last level)."""
    import threading

    from napari_cultureseg.core.segmentation import Segmentation

    viewer, w = phase_segmented
    mask = viewer.layers["well · cell"].data > 0
    before = viewer.layers["well · cell objects"].data.copy()
    real = Segmentation.instances
    gate, on_gui_thread = threading.Event(), []

    def held(self, *args, **kwargs):  # the real cut, once the test lets it go
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        gate.wait(timeout=20)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Segmentation, "instances", held)
    w._splitting["cell"].value = 0.3
    assert w.counter is not None and "cutting the objects at cell splitting 0.3" in w.status.value
    np.testing.assert_array_equal(viewer.layers["well · cell objects"].data, before)  # not yet
    w._splitting["cell"].value = 0.8  # moved again before the first count came back
    gate.set()
    counted(qtbot, w)
    assert on_gui_thread and not any(on_gui_thread)
    expected = real(w.result.with_seeds({"cell": 0.8}), "cell", mask)
    np.testing.assert_array_equal(viewer.layers["well · cell objects"].data, expected)
    assert w.status.value == f"objects: cell {int(expected.max())} (cell splitting 0.8)"


def test_choosing_a_model_sets_its_own_test_time_augmentation(widget, tiny_bundle):
    from napari_cultureseg.core.bundles import user_models_dir

    viewer, w = widget
    tiny_bundle.with_config(name="tiny-tta", tta=8).save(user_models_dir() / "tiny-tta")
    w.model.reset_choices()
    assert w.tta.value == 1  # tiny's own
    w.model.value = "tiny-tta"
    assert w.tta.value == 8
    w.tta.value = 2  # the user's choice holds for this model's runs ...
    w.model.value = "tiny"
    assert w.tta.value == 1  # ... and another model starts from its own


def test_splitting_is_kept_per_model(widget, culture_sample, qtbot):
    """A level set for one model's class does not carry over to another model's class of
    the same name; coming back to the first model brings it back."""
    from dataclasses import replace

    from napari_cultureseg.core.bundles import load_bundle, user_models_dir

    viewer, w = widget
    phase = load_bundle("phase-cells")
    other = phase.with_config(
        name="phase-other", classes=(replace(phase.config.classes[0], seed_threshold=0.4),)
    )
    other.save(user_models_dir() / "phase-other")
    viewer.add_image(culture_sample, name="well")
    w.image.reset_choices()
    w.model.reset_choices()
    w.diameter.value = 40.0
    w.model.value = "phase-cells"
    run(qtbot, w)
    w._splitting["cell"].value = 0.8
    w.model.value = "phase-other"
    run(qtbot, w)
    assert w._splitting["cell"].value == 0.4  # that model's own, not phase-cells' 0.8
    w.model.value = "phase-cells"
    run(qtbot, w)
    assert w._splitting["cell"].value == 0.8
