"""Both docks fit a 1920×1080 screen together, every control on screen."""

from __future__ import annotations


def test_both_docks_fit_a_full_hd_screen(make_napari_viewer, tiny_bundle, qtbot):
    from napari_cultureseg._widgets.finetune import FinetuneWidget
    from napari_cultureseg._widgets.segment import SegmentWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1920, 1080)
    viewer.open_sample("napari-cultureseg", "synthetic_culture")
    seg = SegmentWidget(viewer)
    ft = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    viewer.window.add_dock_widget(ft, name="Fine-tune")
    seg.model.reset_choices()
    seg.model.value = "tiny"
    seg.image.reset_choices()
    seg.start()
    qtbot.waitUntil(lambda: seg.worker is None and seg.counter is None, timeout=60_000)
    qtbot.wait(200)
    assert window.height() <= 1080, window.height()
    controls = [
        seg.image,
        seg.model,
        seg.diameter,
        seg.run_button,
        seg.stop_button,
        seg.accept_button,
        seg.count_button,
        *seg._sliders.values(),
        ft.model,
        ft.steps,
        ft.start_button,
        ft.stop_button,
        ft.versions,
        ft.use_button,
    ]
    for w in controls:
        assert not w.native.visibleRegion().isEmpty(), w
        bottom = w.native.mapTo(window, w.native.rect().bottomLeft()).y()
        assert bottom <= window.height(), (w, bottom)
    assert ft.plot.isVisible() and not ft.plot.visibleRegion().isEmpty()
