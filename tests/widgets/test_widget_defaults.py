"""The widgets start from the engine's defaults (the CLI's side: tests/test_defaults.py)."""

from __future__ import annotations

import inspect

from napari_cultureseg._widgets.finetune import FinetuneWidget
from napari_cultureseg._widgets.segment import SegmentWidget
from napari_cultureseg.core.scale import choose_zoom
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.versions import finetune_config


def default(fn, name):
    return inspect.signature(fn).parameters[name].default


def segment_widget_disagreements(w, bundle) -> list[str]:
    """What the Segment widget would run with, unless the user changes it, against the engine."""
    req = w.request()
    cfg = bundle.config
    pairs = {
        "device": (req.device, default(segment, "device")),
        "tta": (req.tta, cfg.tta),  # the engine's None: the model's own
        "runtime": (req.runtime, default(segment, "runtime")),
        "tile": (req.tile, cfg.tile),  # the engine's None: the model's own
        "overlap": (req.overlap, cfg.overlap),
        "diameter": (req.diameter or "auto", default(choose_zoom, "diameter")),  # 0 shown: auto
        "pixel_size": (req.pixel_size, default(choose_zoom, "pixel_size")),
    }
    return [f"{k}: widget {a!r}, engine {b!r}" for k, (a, b) in pairs.items() if a != b]


def test_segment_and_finetune_widgets_start_from_the_engines_defaults(
    make_napari_viewer, tiny_bundle
):
    import numpy as np

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="field")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    seg.model.reset_choices()
    seg.model.value = "tiny"
    seg.image.value = viewer.layers["field"]
    assert not segment_widget_disagreements(seg, tiny_bundle)

    seg.tta.value = 4  # a default changed in the widget is caught
    assert segment_widget_disagreements(seg, tiny_bundle) == ["tta: widget 4, engine 1"]

    ft = FinetuneWidget(viewer)
    recipe = finetune_config()
    assert (ft.lr.value, ft.batch.value, ft.patch.value) == (
        recipe.lr,
        recipe.batch_size,
        recipe.patch_size,
    )
