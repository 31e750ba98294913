"""Hand corrections in a real viewer: saved in seconds, never overwritten, restored on reopen."""

import numpy as np
import pytest

from napari_cultureseg._widgets.segment import SegmentWidget
from napari_cultureseg.core.synth import phase_culture
from napari_cultureseg.core.workspace import Workspace


def segment_now(qtbot, w):
    w.start()
    qtbot.waitUntil(lambda: w.worker is None and w.counter is None, timeout=60_000)
    assert w.result is not None, w.status.value


@pytest.fixture
def setup(make_napari_viewer, tiny_bundle):
    viewer = make_napari_viewer(show=True)  # shown: the visible region needs a real canvas
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model.reset_choices()
    w.model.value = "tiny"
    img, _ = phase_culture((200, 240), seed=4)
    viewer.add_image(img, name="field")
    w.image.reset_choices()
    return viewer, w, img


def test_correction_is_saved_and_survives_threshold_and_resegment(setup, qtbot):
    viewer, w, img = setup
    segment_now(qtbot, w)
    layer = viewer.layers["field · cell"]
    w._sliders["cell"].value = 0.05  # nearly everything is cell now
    layer.brush_size = 5
    layer.mode = "paint"
    w._sliders["cell"].value = 0.95  # nearly nothing is cell now
    assert layer.data[100, 120] == 0
    layer.paint((100, 120), 1)  # the user paints a blob of cell
    w._sliders["cell"].value = 0.05
    assert layer.data[20, 20] == 1
    layer.selected_label = 0
    layer.paint((20, 20), 0)  # ...and erases elsewhere
    painted = layer.data.copy()
    corr = next(iter(w.corrections.values()))
    # on disk within the autosave interval (1 s) plus one timer tick (0.5 s)
    qtbot.waitUntil(lambda: not corr.autosaver.pending, timeout=3_000)
    on_disk = Workspace.open(corr.ws.key)
    assert on_disk.masks["cell"][100, 120] == 1 and on_disk.masks["cell"][20, 20] == 0
    assert on_disk.reviewed["cell"][100, 120] and on_disk.reviewed["cell"][20, 20]
    assert not on_disk.reviewed["cell"][180, 10]  # far from any edit: unreviewed
    assert not on_disk.reviewed["debris"].any()  # edits of one class review only that class
    kinds = [e.kind for e in on_disk.journal()]
    assert kinds[:2] == ["segment", "segment"] and "paint" in kinds and "threshold" in kinds

    reviewed = on_disk.reviewed["cell"]
    for t in (0.95, 0.05):  # thresholds change only unreviewed pixels
        w._sliders["cell"].value = t
        np.testing.assert_array_equal(layer.data[reviewed], painted[reviewed])
    assert (layer.data[~reviewed] == 1).mean() > 0.9  # threshold 0.05: nearly all cell
    segment_now(qtbot, w)  # a new segmentation keeps them too
    np.testing.assert_array_equal(viewer.layers["field · cell"].data[reviewed], painted[reviewed])


def test_workspace_is_restored_when_the_image_is_opened_again(setup, qtbot, make_napari_viewer):
    viewer, w, img = setup
    segment_now(qtbot, w)
    layer = viewer.layers["field · cell"]
    layer.brush_size = 7
    layer.paint((50, 60), 1)
    expected = layer.data.copy()
    corr = next(iter(w.corrections.values()))
    qtbot.waitUntil(lambda: not corr.autosaver.pending, timeout=3_000)
    viewer.close()

    viewer2 = make_napari_viewer()
    w2 = SegmentWidget(viewer2)  # the widget is open before the image...
    viewer2.add_image(img.copy(), name="field")  # ...with the same pixels: the same workspace
    assert "restored" in w2.status.value
    np.testing.assert_array_equal(viewer2.layers["field · cell"].data, expected)
    assert "field · debris" in viewer2.layers
    # and the restored layers keep recording edits
    viewer2.layers["field · cell"].paint((150, 150), 1)
    corr = next(iter(w2.corrections.values()))
    qtbot.waitUntil(lambda: not corr.autosaver.pending, timeout=3_000)
    assert Workspace.open(corr.ws.key).masks["cell"][150, 150] == 1


def test_accept_view_marks_the_visible_region_reviewed(setup, qtbot):
    viewer, w, img = setup
    segment_now(qtbot, w)
    viewer.camera.center = (50, 60)
    viewer.camera.zoom = 8
    qtbot.wait(50)
    w.accept_view()
    corr = next(iter(w.corrections.values()))
    y0, x0, y1, x1 = corr.visible_box()
    assert 0 < (y1 - y0) * (x1 - x0) < img.size  # only the zoomed-in part
    ws = Workspace.open(corr.ws.key)  # accept saves at once
    for cls in ("cell", "debris"):
        assert ws.reviewed[cls][y0:y1, x0:x1].all()
        assert ws.reviewed[cls].sum() == (y1 - y0) * (x1 - x0)


def test_segmenting_only_the_visible_region(setup, qtbot):
    viewer, w, img = setup
    segment_now(qtbot, w)
    corr = next(iter(w.corrections.values()))
    w._sliders["cell"].value = 0.05
    # an empty model mask everywhere (unreviewed), so any new pixel comes from the next run
    corr.set_from_model("cell", "#39ff14", np.zeros(img.shape, bool), kind="segment")
    viewer.camera.center = (40, 40)
    viewer.camera.zoom = 10
    qtbot.wait(50)
    w.view_only.value = True
    segment_now(qtbot, w)
    box = w._result_for[2]
    assert box is not None and (box[2] - box[0]) * (box[3] - box[1]) < img.size / 2
    assert w.result.probabilities.shape[1:] == (box[2] - box[0], box[3] - box[1])
    after = viewer.layers["field · cell"].data
    inside = np.zeros(img.shape, bool)
    inside[box[0] : box[2], box[1] : box[3]] = True
    # the new result lands in the segmented region only; outside it nothing changed
    np.testing.assert_array_equal(after[inside], w.result.mask("cell", 0.05).ravel())
    assert not after[~inside].any()


def test_the_edit_kind_is_the_one_at_the_stroke_not_at_the_save(setup, qtbot):
    viewer, w, img = setup
    segment_now(qtbot, w)
    layer = viewer.layers["field · cell"]
    corr = next(iter(w.corrections.values()))
    qtbot.waitUntil(lambda: not corr.autosaver.pending, timeout=3_000)
    layer.mode = "paint"
    layer.brush_size = 5
    layer.paint((60, 60), 1)
    layer.mode = "erase"  # the user switches tools before the autosave runs
    qtbot.waitUntil(lambda: not corr.autosaver.pending, timeout=3_000)
    kinds = [e.kind for e in Workspace.open(corr.ws.key).journal()]
    assert kinds[-1] == "paint", kinds
