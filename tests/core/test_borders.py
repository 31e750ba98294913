"""The border channel: touching objects come out separate (issue 3, item 3)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec, boundary_channels
from napari_cultureseg.core.bundles import Bundle
from napari_cultureseg.core.datasets import borders, load_folder
from napari_cultureseg.core.postprocess import instances
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.segmentation import Segmentation
from napari_cultureseg.core.tiling import run_to_end
from napari_cultureseg.core.training import TrainConfig, run_training
from napari_cultureseg.core.workspace import Workspace

TINY = {"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [32, 16, 8]}
CELL = ClassSpec("cell", separate="boundary", min_size=0, fill_holes=False, instances=True)


def _touching() -> np.ndarray:
    """Two 10×10 objects sharing an edge, and a third one apart."""
    lab = np.zeros((30, 40), np.uint16)
    lab[5:15, 5:15] = 1
    lab[5:15, 15:25] = 2
    lab[20:26, 30:36] = 3
    return lab


def test_border_channels_come_after_the_classes_and_only_for_boundary_classes():
    classes = (ClassSpec("nucleus"), CELL, ClassSpec("debris", separate="watershed"))
    assert boundary_channels(classes) == {"cell": 3}
    assert boundary_channels(["cell"]) == {}
    cfg = BundleConfig("m", "unet", classes, params=TINY)
    assert cfg.n_outputs == 4


def test_borders_of_touching_objects_are_two_pixels_wide_between_them():
    b = borders(_touching()).astype(bool)
    assert b[10, 14] and b[10, 15]  # one pixel of each object at their shared edge
    assert not b[10, 13] and not b[10, 16]
    assert b[5, 10] and not b[4, 10]  # inner border: object pixels only
    assert not b[20:26, 30:36][1:-1, 1:-1].any() and b[20:26, 30:36].sum() == 20
    # a binary mask cannot tell touching objects apart: only their outline is a border
    assert not borders(_touching() > 0)[10, 14]


def test_boundary_instances_split_what_the_mask_merges():
    lab = _touching()
    mask = lab > 0
    prob_border = borders(lab).astype(np.float32)
    out = instances(mask, method="boundary", boundary=prob_border)
    assert out.max() == 3
    assert ((out > 0) == mask).all()  # borders are given back to their objects
    assert len(np.unique(out[5:15, 5:15])) == 1 and out[10, 5] != out[10, 24]
    # a part of the mask with no core (all border) is still an object
    thin = np.zeros((10, 10), bool)
    thin[4, 2:8] = True
    assert instances(thin, method="boundary", boundary=thin.astype(np.float32)).max() == 1
    with pytest.raises(ValueError, match="border channel"):
        instances(mask, method="boundary")


def test_load_folder_adds_border_targets_known_only_where_the_class_is(tmp_path):
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "e1_a_image.tif", rng.integers(0, 255, (30, 40), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "e1_a_cell.tif", _touching())
    tifffile.imwrite(tmp_path / "e1_b_image.tif", rng.integers(0, 255, (30, 40), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "e1_b_nucleus.tif", (_touching() == 3).astype(np.uint8))
    a, b = load_folder(tmp_path, [ClassSpec("nucleus"), CELL])
    assert a.target.shape == (3, 30, 40)
    np.testing.assert_array_equal(a.target[2], borders(_touching()))
    assert a.valid[1:].all() and not a.valid[0].any()
    assert b.valid[0].all() and not b.valid[1:].any()  # no cell mask: cell and its border unknown
    # plain names keep the old layout
    assert load_folder(tmp_path, ["nucleus", "cell"])[0].target.shape == (2, 30, 40)


def test_workspace_samples_leave_border_channels_unknown(tmp_path):
    ws = Workspace.open(
        "k", root=tmp_path, image_name="e1_a.tif", shape=(30, 40), classes=[("cell", "#ffffff")]
    )
    ws.set_mask("cell", _touching() > 0, kind="segment")
    ws.accept_region("cell", (0, 0, 30, 40))
    s = ws.samples(np.zeros((1, 30, 40), np.float32), classes=[CELL])
    assert s.target.shape == (2, 30, 40)
    assert s.valid[0].all() and not s.valid[1].any()


def test_a_model_with_a_border_channel_trains_segments_and_separates(tmp_path):
    lab = np.zeros((64, 64), np.uint16)
    for i, (y, x) in enumerate([(8, 8), (8, 24), (36, 36), (36, 52)]):  # two touching pairs
        lab[y : y + 16, x : x + 16] = i + 1
    image = np.where(lab > 0, 200, 40).astype(np.uint8)
    image[borders(lab).astype(bool)] = 120
    tifffile.imwrite(tmp_path / "g_a_image.tif", image)
    tifffile.imwrite(tmp_path / "g_a_cell.tif", lab)
    samples = load_folder(tmp_path, [CELL])
    cfg = TrainConfig(
        steps=25, batch_size=2, patch_size=64, lr=3e-3, val_every=25, threads=1, augment=False
    )
    model = BundleConfig(name="b", architecture="unet", classes=(CELL,), params=TINY, tile=64)
    losses = []
    bundle = run_training(model, cfg, samples, samples, on_report=lambda r: losses.append(r.loss))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    bundle.save(tmp_path / "model")
    loaded = Bundle.load(tmp_path / "model")
    assert loaded.config.classes[0].separate == "boundary"
    seg = run_to_end(segment(loaded, image, device="cpu"))
    assert seg.probabilities.shape == (2, 64, 64)
    assert seg.names == ["cell"]  # the border channel is not a class of its own
    assert seg.instances("cell").dtype == np.uint16


def test_segmentation_uses_the_border_channel_for_instances():
    lab = _touching()
    probs = np.stack([(lab > 0).astype(np.float32), borders(lab).astype(np.float32)])
    seg = Segmentation(probs, (CELL,))
    assert seg.instances("cell").max() == 3
    merged = Segmentation(probs[:1], (ClassSpec("cell", min_size=0, instances=True),))
    assert merged.instances("cell").max() == 2
