import numpy as np
import pytest

from napari_cultureseg.core.bundle_config import ClassSpec, DerivedClass
from napari_cultureseg.core.postprocess import binary_mask, instances
from napari_cultureseg.core.segmentation import Segmentation


def test_threshold_fill_and_small_object_removal():
    prob = np.zeros((20, 20), np.float32)
    prob[2:10, 2:10] = 0.9
    prob[5, 5] = 0.1  # a hole
    prob[15, 15] = 0.8  # a 1-pixel speck
    m = binary_mask(prob, threshold=0.5, fill_holes=True, min_size=4)
    assert m[5, 5] and not m[15, 15] and m.sum() == 64
    m2 = binary_mask(prob, threshold=0.5, fill_holes=False, min_size=0)
    assert not m2[5, 5] and m2[15, 15] and m2.sum() == 64
    assert binary_mask(prob, threshold=0.95).sum() == 0


def test_largest_component_only():
    prob = np.zeros((30, 30))
    prob[0:5, 0:5] = 1
    prob[10:25, 10:25] = 1
    m = binary_mask(prob, largest_only=True)
    assert m.sum() == 225 and not m[0, 0]


def test_instances_by_connected_components():
    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:3] = True
    mask[6:9, 6:9] = True
    mask[0, 9] = True
    lab = instances(mask, min_size=2)
    assert lab.dtype == np.uint16 and lab.max() == 2
    assert len(np.unique(lab[1:3, 1:3])) == 1 and lab[0, 9] == 0


def test_the_object_table_tells_discs_from_rods():
    from skimage.draw import disk

    from napari_cultureseg.core.tables import object_rows

    lab = np.zeros((60, 60), np.uint16)
    lab[disk((20, 20), 10)] = 1
    lab[50:53, 5:55] = 2
    disc, rod = object_rows({"cell": lab})
    assert disc["area"] == (lab == 1).sum() and rod["area"] == 150
    assert disc["eccentricity"] < 0.2 < 0.99 < rod["eccentricity"]
    assert abs(disc["equivalent_diameter"] - 20) < 1
    assert disc["solidity"] > 0.95 and rod["solidity"] == 1.0
    roundness = [4 * np.pi * r["area"] / r["perimeter"] ** 2 for r in (disc, rod)]
    assert roundness[0] > 0.85 > 0.4 > roundness[1]


def test_overlapping_classes_and_derived_cytoplasm():
    probs = np.zeros((2, 10, 10), np.float32)
    probs[1, 1:9, 1:9] = 0.9  # cell
    probs[0, 3:6, 3:6] = 0.9  # nucleus, inside the cell: classes overlap
    seg = Segmentation(
        probs,
        (ClassSpec("nucleus", min_size=0), ClassSpec("cell", min_size=0)),
        (DerivedClass("cytoplasm", base="cell", minus=("nucleus",)),),
    )
    m = seg.masks()
    assert (m["nucleus"] & m["cell"]).sum() == 9
    assert m["cytoplasm"].sum() == 64 - 9 and not (m["cytoplasm"] & m["nucleus"]).any()
    # thresholds change without re-running anything
    assert seg.masks({"cell": 0.95})["cell"].sum() == 0
    assert seg.names == ["nucleus", "cell", "cytoplasm"]


def test_watershed_separates_touching_discs_that_components_merge():
    from skimage.draw import disk

    mask = np.zeros((60, 90), bool)
    mask[disk((30, 28), 15)] = True
    mask[disk((30, 56), 15)] = True  # overlaps the first: one connected blob with a neck
    assert instances(mask).max() == 1
    lab = instances(mask, method="watershed")
    assert lab.max() == 2
    assert lab[30, 20] != lab[30, 64] and lab[30, 20] > 0 and lab[30, 64] > 0
    assert ((lab > 0) == mask).all()
    # a single lumpy cell is not cut into pieces
    one = np.zeros((60, 60), bool)
    one[disk((30, 30), 18)] = True
    one[10:14, 28:33] = True
    assert instances(one, method="watershed").max() == 1
    # an object thinner than twice the split depth has no h-maximum, and stays an object
    both = np.zeros((60, 120), bool)
    both[:, :90] = mask
    both[disk((30, 108), 3)] = True
    lab = instances(both, method="watershed", h=5.0)
    assert lab.max() == 3 and ((lab > 0) == both).all()


def test_fast_hole_filling_equals_scipy():
    from scipy import ndimage as ndi

    from napari_cultureseg.core.postprocess import fill_holes_fast

    rng = np.random.default_rng(0)
    for i in range(100):
        shape = tuple(int(v) for v in rng.integers(1, 50, 2))
        m = rng.random(shape) > rng.random()
        if i % 2:
            m = ndi.binary_opening(m)
        assert np.array_equal(fill_holes_fast(m), ndi.binary_fill_holes(m)), i
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a hole
    ring[0, 0] = False
    assert fill_holes_fast(ring)[4, 4] and not fill_holes_fast(ring)[0, 0]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images split the foreground into the same objects (ids may differ)."""
    if not ((a > 0) == (b > 0)).all():
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("method", ["components", "watershed", "distance"])
def test_tiled_instances_equal_untiled_ones_for_objects_smaller_than_the_halo(method):
    from skimage.draw import disk

    from napari_cultureseg.core.targets import distances

    rng = np.random.default_rng(3)
    truth = np.zeros((300, 420), np.int32)
    for i in range(60):  # discs and touching pairs, many across the 128-px tile borders
        y, x, r = rng.integers(10, 290), rng.integers(10, 410), rng.integers(3, 11)
        truth[disk((y, x), r, shape=truth.shape)] = i + 1
        if i % 3 == 0:
            truth[disk((y, x + int(1.6 * r)), r, shape=truth.shape)] = 100 + i
    mask = truth > 0
    dist = distances(truth) if method == "distance" else None
    kw = dict(method=method, min_size=5, h=2.0, distance=dist)
    whole = instances(mask, tile=0, **kw)
    tiled = instances(mask, tile=128, halo=32, **kw)
    assert whole.max() > 40 and ((whole > 0) == (tiled > 0)).all()
    assert len(np.unique(tiled)) == int(tiled.max()) + 1  # ids 1..n, no gaps
    if method == "watershed":
        # the watershed breaks ties between equal neighbours in raster order, which a
        # crop changes: a few pixels between two touching objects may change sides
        assert tiled.max() == whole.max()
        for k in range(1, int(whole.max()) + 1):
            obj = whole == k
            best = np.bincount(tiled[obj]).argmax()
            iou = (obj & (tiled == best)).sum() / (obj | (tiled == best)).sum()
            assert iou > 0.75, (k, iou)
    else:
        assert _same_partition(whole, tiled)
    # a mask above the size limit is tiled by default, and still one label per object
    assert instances(mask, **kw).max() == whole.max()


def _two_touching_discs(shape, r, centres):
    from skimage.draw import disk

    mask = np.zeros(shape, bool)
    lab = np.zeros(shape, np.int32)
    for i, c in enumerate(centres, 1):
        d = disk(c, r, shape=shape)
        mask[d] = True
        lab[d] = i
    return mask, lab


@pytest.mark.parametrize("rows", [1024, 7])
def test_labels_found_on_the_network_grid_keep_the_image_grid_outline(rows):
    from napari_cultureseg.core.instance_labels import transfer_labels

    _, coarse = _two_touching_discs((40, 60), 10, [(20, 20), (20, 38)])  # network grid, ×0.5
    mask, truth = _two_touching_discs((80, 120), 20, [(40, 40), (40, 76)])
    mask[5:9, 100:104] = True  # drawn by the user, unknown to the network: an object
    mask[70, 5] = True  # a speck below min_size: dropped
    lab = transfer_labels(coarse, mask, min_size=4, rows=rows)
    assert lab.dtype == np.uint16 and lab.max() == 3
    assert ((lab > 0) <= mask).all() and not lab[70, 5] and (lab[5:9, 100:104] == 3).all()
    core = mask.copy()
    core[5:9, 100:104] = core[70, 5] = False
    assert ((lab > 0) == core | (lab == 3)).all()  # every pixel of an object is kept
    for i in (1, 2):  # each disc is one object, matching the truth but where they meet
        ids = np.bincount(lab[truth == i], minlength=4)
        assert ids[1:].argmax() + 1 == i and ids[i] >= 0.97 * (truth == i).sum()
    whole = transfer_labels(coarse, mask, min_size=4, rows=1024)
    assert (lab == whole).all()  # bands change nothing


def test_where_two_objects_meet_the_line_is_interpolated_not_a_block_of_source_pixels():
    from napari_cultureseg.core.instance_labels import transfer_labels

    coarse = np.array([[1, 2], [2, 2]], np.uint16)  # object 1 is the top-left source pixel
    lab = transfer_labels(coarse, np.ones((8, 8), bool))
    assert (lab[:3, :3] == 1).all() and lab[0, 3] == lab[3, 0] == 1
    assert lab[3, 3] == 2  # nearest neighbour would give object 1 the whole 4 × 4 block
    assert (lab[4:] == 2).all() and (lab[:, 4:] == 2).all()


def test_a_zoomed_segmentation_separates_objects_at_the_size_the_model_learnt():
    # two touching discs of radius 10 on the network's grid (the image was enlarged ×2
    # for it): split_depth 3 px means 3 px there; on the image's grid (radius 5) the neck
    # is too shallow for it and the discs would stay one object
    mask, _ = _two_touching_discs((40, 64), 10, [(20, 20), (20, 40)])
    raw = np.where(mask, 0.9, 0.05).astype(np.float32)[None]
    spec = ClassSpec("cell", min_size=20, instances=True, separate="watershed", split_depth=3.0)
    zoomed = Segmentation(raw, (spec,), zoom=2.0, shape=(20, 32))
    assert zoomed.scale == pytest.approx(0.25) and zoomed.probabilities.shape == (1, 20, 32)
    m = zoomed.mask("cell")
    lab = zoomed.instances("cell")
    assert lab.shape == (20, 32) and lab.max() == 2 and ((lab > 0) == m).all()
    small = Segmentation(zoomed.probabilities, (spec,))  # the same map, found at image scale
    assert small.instances("cell").max() == 1


@pytest.mark.parametrize("choose", ["roc_threshold", "dice_threshold"])
def test_a_chosen_threshold_reproduces_its_operating_point_in_the_masks(choose):
    """Scores tied at the threshold (8-bit probabilities) are foreground in the metrics that
    choose a threshold; the masks made with it must be the same (one rule, ``>=``)."""
    from napari_cultureseg.core import metrics as M

    rng = np.random.default_rng(3)
    truth = np.zeros((64, 64), bool)
    truth[10:40, 12:50] = True
    prob = np.clip(truth * 0.55 + rng.normal(0.2, 0.15, truth.shape), 0, 1)
    prob = np.round(prob * 255) / 255  # stored as 8 bits: many ties
    t = getattr(M, choose)(prob, truth)
    assert np.any(prob == t), "the chosen threshold is one of the scores (a tie)"
    mask = binary_mask(prob, threshold=t, fill_holes=False)
    best = max(M.dice(prob >= s, truth) for s in np.unique(prob))
    if choose == "dice_threshold":
        assert M.dice(mask, truth) == pytest.approx(best)
    tp, fp, tn, fn = M.confusion(mask, truth)
    assert (tp, fp) == tuple(M.confusion(prob >= t, truth)[:2])
    assert M.sensitivity(mask, truth) > M.sensitivity(prob > t, truth), "ties decide here"
