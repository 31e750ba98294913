"""Mask R-CNN for co-cultures (DeepMuCS-Segmentation): anchors, data, training, files, COCO."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import torch
from pycocotools import mask as mask_util

from napari_cultureseg.core import maskrcnn as mr
from napari_cultureseg.core import maskrcnn_coco as mc
from napari_cultureseg.core import maskrcnn_training as mt
from napari_cultureseg.core.synth import coculture as sc
from napari_cultureseg.core.synth import coculture_sources as cs
from napari_cultureseg.core.tiling import run_to_end

from .test_synth_coculture import field

BG = 200
FAST = {"batch_size": 1, "patch_size": 64, "rois_per_image": 32, "threads": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _source(kind: str):
    pairs = [field(kind, 100 * ord(kind) + k) for k in range(4)]
    names = [f"{kind}x_p{k // 2:04d}_t{k % 2:05d}" for k in range(4)]
    return cs.source_from_pairs(pairs, name=kind, names=names)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coculture")
    sc.write_dataset(
        [_source("A"), _source("B")], folder, n_train=3, n_test=1, seed=7, halo=2, counts=6
    )
    return folder


@pytest.fixture(scope="module")
def trained(dataset):
    """A resnet18 model after a step; few detections an image, so prediction is quick."""
    torch.manual_seed(0)
    model = mr.build_model(mr.MaskRCNNConfig(types=("A", "B"), detections_per_image=20))
    samples = mt.read_folder(dataset / "train")
    run_to_end(mt.train_maskrcnn(samples, model=model, steps=1, **FAST))
    return model


def test_anchors_are_the_papers_and_the_rpn_head_matches():
    net = mr.build_model(mr.MaskRCNNConfig(types=("A", "B"))).net
    gen = net.rpn.anchor_generator
    assert gen.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert gen.aspect_ratios == ((0.5, 1.0, 2.0, 3.0, 4.0),) * 5
    assert gen.num_anchors_per_location() == [5] * 5
    assert net.rpn.head.cls_logits.out_channels == 5
    assert net.rpn.head.bbox_pred.out_channels == 4 * 5
    # one anchor size per FPN level, the levels at strides 4..64 (P2-P6)
    x = torch.zeros(1, 1, 128, 128)
    with torch.inference_mode():
        feats = net.eval().backbone(x)
        images, _ = net.transform([x[0]])
        anchors = gen(images, list(feats.values()))[0]
    assert [128 // f.shape[-1] for f in feats.values()] == [4, 8, 16, 32, 64]
    per_level = [f.shape[-1] * f.shape[-2] * 5 for f in feats.values()]
    assert anchors.shape == (sum(per_level), 4)
    start = 0
    for size, n in zip((8, 16, 32, 64, 128), per_level, strict=True):
        a = anchors[start : start + 5]  # the 5 anchors of the level's first place
        w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        np.testing.assert_allclose(torch.sqrt(w * h), size, rtol=0.15)
        np.testing.assert_allclose(h / w, [0.5, 1, 2, 3, 4], rtol=0.2)
        start += n
    # one gray channel in, and the image keeps its size (no 800-px resize)
    assert net.backbone.body.conv1.in_channels == 1
    assert images.tensors.shape[-2:] == (128, 128) and images.image_sizes == [(128, 128)]


def test_targets_are_the_written_instances(dataset):
    samples = mt.read_folder(dataset / "train")
    assert [s.name for s in samples] == ["train00000", "train00001", "train00002"]
    for s in samples:
        t = s.target()
        expected = 0
        for k, kind in enumerate(("A", "B")):
            lab = tifffile.imread(dataset / "train" / f"{s.name}_{kind}.tif")
            ids = [i for i in np.unique(lab) if i]
            mine = np.flatnonzero(t["labels"] == k + 1)
            assert len(mine) == len(ids) > 0
            for i, j in zip(ids, mine, strict=True):  # same order: by id within a type
                m = lab == i
                np.testing.assert_array_equal(t["masks"][j], m)
                ys, xs = np.nonzero(m)
                assert t["boxes"][j].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            expected += len(ids)
        assert t["boxes"].shape == (expected, 4) and t["masks"].shape == (expected, 120, 120)


def test_instance_targets_skip_missing_ids_and_tiny_ones():
    a, b = np.zeros((10, 12), np.uint16), np.zeros((10, 12), np.uint16)
    a[2:5, 5:9] = 3  # ids 1 and 2 absent
    a[8, 0] = 4  # one pixel
    b[0:2, 0:1] = 1  # one pixel wide: box 1 wide, never degenerate
    t = mt.instance_targets([a, b], min_pixels=2)
    assert t["labels"].tolist() == [1, 2]
    assert t["boxes"].tolist() == [[5, 2, 9, 5], [0, 0, 1, 2]]
    assert t["masks"][0].sum() == 12 and t["masks"][1].sum() == 2
    empty = mt.instance_targets([np.zeros((4, 4), np.uint16)])
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 4, 4)


def test_missing_type_mask_is_an_error(dataset, tmp_path):
    for p in (dataset / "test").iterdir():
        if not p.name.endswith("_B.tif"):
            (tmp_path / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ValueError, match=r"no test00000_B\.tif.*one instance mask per type"):
        mt.read_folder(tmp_path, types=["A", "B"])
    with pytest.raises(ValueError, match="no manifest.json.*types="):
        mt.read_folder(tmp_path)


def test_a_few_training_steps_learn_with_finite_losses(dataset):
    samples = mt.read_folder(dataset / "train")
    torch.set_num_threads(2)  # the run sets its own, and restores this one
    gen = mt.train_maskrcnn(samples, steps=2, seed=1, **FAST)
    steps = []
    with pytest.raises(StopIteration) as stop:
        while True:
            steps.append(next(gen))
            assert torch.get_num_threads() == 1
    model = stop.value.value
    assert [s.step for s in steps] == [1, 2]
    assert all(math.isfinite(s.loss) and s.loss > 0 for s in steps)
    assert set(steps[0].losses) >= {"loss_classifier", "loss_mask", "loss_objectness"}
    assert model.info["steps"] == 2 and torch.get_num_threads() == 2
    # closing the generator stops it; the model handed in has been trained in place
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    gen = mt.train_maskrcnn(samples, model=model, steps=50, **FAST)
    next(gen)
    assert torch.get_num_threads() == 1
    gen.close()
    assert model.info["steps"] == 1 and torch.get_num_threads() == 2
    changed = [k for k, v in model.net.state_dict().items() if not torch.equal(v, before[k])]
    assert "backbone.body.conv1.weight" in changed


def test_save_load_round_trip_is_exact_and_pickle_free(trained, dataset, tmp_path):
    folder = mr.save_maskrcnn(trained, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    raw = (folder / "weights.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + n])  # a safetensors header, not a pickle or a torch zip
    assert not raw.startswith((b"\x80", b"PK"))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["anchor_sizes"] == [8, 16, 32, 64, 128] and cfg["types"] == ["A", "B"]
    loaded = mr.load_maskrcnn(folder)
    assert loaded.config == trained.config and loaded.info == trained.info
    a, b = trained.net.state_dict(), loaded.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    image = mt.read_folder(dataset / "test")[0].image
    kw = {"score_threshold": 0.0, "mask_threshold": 0.0, "with_scores": True}
    out_a = mr.predict_instances(trained, image, **kw)
    out_b = mr.predict_instances(loaded, image, **kw)
    assert sum(len(v) for v in out_a[1].values()) >= 1
    for t in ("A", "B"):
        np.testing.assert_array_equal(out_a[0][t], out_b[0][t])
        np.testing.assert_array_equal(out_a[1][t], out_b[1][t])


def test_predictions_are_label_images_that_never_overlap(trained, dataset):
    image = mt.read_folder(dataset / "test")[0].image
    # mask threshold 0: every detection claims its whole box, so boxes overlap a lot
    labels, scores = mr.predict_instances(
        trained, image, score_threshold=0.0, mask_threshold=0.0, with_scores=True
    )
    assert set(labels) == {"A", "B"}
    total = 0
    for t, lab in labels.items():
        assert lab.shape == image.shape and lab.dtype == np.uint16
        n = int(lab.max())
        assert sorted(np.unique(lab[lab > 0]).tolist()) == list(range(1, n + 1))
        assert scores[t].shape == (n,)
        total += n
    assert total >= 1
    assert ((labels["A"] > 0).astype(int) + (labels["B"] > 0)).max() == 1


def test_pixels_go_to_the_best_detection_and_duplicates_are_dropped():
    square = np.ones((10, 10), bool)
    windows = [(0, 0, square), (5, 5, square), (1, 1, square), (30, 30, np.ones((2, 2), bool))]
    labels, scores = mr.assign_pixels(
        windows, [1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6], (40, 40), ("A", "B"), min_pixels=8
    )
    # B (0.9) keeps its square; A (0.8) all but the 5x5 it shares; the third finds 8 of its
    # 100 pixels free, under half: a duplicate; the 2x2 is under min_pixels
    assert (labels["B"] == 1).sum() == 100 and labels["B"].max() == 1
    assert (labels["A"] == 1).sum() == 75 and labels["A"].max() == 1
    assert labels["A"][5:10, 5:10].max() == 0 and labels["B"][5:10, 5:10].min() == 1
    assert scores["B"].tolist() == pytest.approx([0.9])
    assert scores["A"].tolist() == pytest.approx([0.8])


def test_coco_annotations_round_trip_a_known_mask():
    a, b = np.zeros((20, 30), np.uint16), np.zeros((20, 30), np.uint16)
    yy, xx = np.mgrid[:20, :30]
    a[(yy - 8) ** 2 + (xx - 10) ** 2 <= 16] = 1
    a[12:18, 20:27] = 2
    b[1:4, 25:29] = 5  # ids need not be consecutive
    anns = mc.coco_annotations({"A": a, "B": b}, ("A", "B"), image_id=3)
    assert [x["category_id"] for x in anns] == [1, 1, 2]
    for ann, (lab, i) in zip(anns, [(a, 1), (a, 2), (b, 5)], strict=True):
        m = mask_util.decode(ann["segmentation"])
        np.testing.assert_array_equal(m, lab == i)
        ys, xs = np.nonzero(lab == i)
        assert ann["area"] == int((lab == i).sum()) and ann["image_id"] == 3
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert json.loads(json.dumps(anns)) == anns  # JSON-ready (RLE counts as text)


def test_coco_evaluation_scores_types():
    a, b = np.zeros((40, 40), np.uint16), np.zeros((40, 40), np.uint16)
    a[2:12, 2:12], a[20:30, 2:10], b[5:15, 25:35] = 1, 2, 1
    truth = mc.coco_annotations({"A": a, "B": b}, ("A", "B"), image_id=1)
    ones = {"A": np.ones(2), "B": np.ones(1)}
    shapes = {1: (40, 40)}
    perfect = mc.coco_annotations({"A": a, "B": b}, ("A", "B"), image_id=1, scores=ones)
    r = mc.coco_evaluate(truth, perfect, types=("A", "B"), shapes=shapes)
    assert r["overall"]["mAP"] == 1.0 and r["per_type"]["B"]["mAP75"] == 1.0
    assert r["overall"]["mAPs"] == 1.0 and r["overall"]["mAPl"] is None  # 64-100 px: small
    # the right masks with the types swapped score nothing: the type is part of a match
    swapped = mc.coco_annotations(
        {"A": b, "B": a}, ("A", "B"), image_id=1, scores={"A": np.ones(1), "B": np.ones(2)}
    )
    r = mc.coco_evaluate(truth, swapped, types=("A", "B"), shapes=shapes)
    assert r["overall"]["mAP"] == 0.0
    half = mc.coco_annotations({"A": a * (a == 1)}, ("A", "B"), image_id=1, scores=ones)
    r = mc.coco_evaluate(truth, half, types=("A", "B"), shapes=shapes)
    assert r["per_type"]["A"]["mAP50"] == pytest.approx(0.5, abs=0.01)
    assert r["per_type"]["B"]["mAP"] == 0.0
