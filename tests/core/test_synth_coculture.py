"""Synthetic co-cultures from mono-culture sources (DeepMuCS-Generation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_cultureseg.core.synth import coculture as sc
from napari_cultureseg.core.synth import coculture_sources as cs

BG = 200  # flat, noise-free backgrounds: every pixel's origin can be read off its value
SHADE = {"A": 0.5, "B": 0.3, "C": 0.7}  # a cell of type t is exactly SHADE[t] × background


def disc(r):
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


SHAPES = {"A": disc(5), "B": np.ones((5, 13), bool), "C": disc(3)}


def field(kind, seed, n=5, side=120):
    """A mono-culture field: ``n`` cells of one shape, apart, none at the border."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side), BG, np.uint8)
    labels = np.zeros((side, side), np.uint16)
    shape = SHAPES[kind]
    for i in range(1, n + 1):
        for _ in range(100):
            y, x = rng.integers(8, side - 8 - np.array(shape.shape), size=2)
            win = (slice(y - 4, y + shape.shape[0] + 4), slice(x - 4, x + shape.shape[1] + 4))
            if not labels[win].any():
                labels[y : y + shape.shape[0], x : x + shape.shape[1]][shape] = i
                break
    image[labels > 0] = round(BG * SHADE[kind])
    return image, labels


def source(kind, positions=3, per_position=2):
    pairs, names = [], []
    for p in range(positions):
        for t in range(per_position):
            pairs.append(field(kind, seed=100 * ord(kind) + 10 * p + t))
            names.append(f"{kind}x_p{p:04d}_t{t:05d}_z001")
    return cs.source_from_pairs(pairs, name=kind, names=names)


@pytest.fixture(scope="module")
def lib():
    return cs.build_library([source("A"), source("B")], halo=2)


EXACT = dict(rotate="right", scale=(1.0, 1.0), match_contrast=0.0, debris=0.0)


def test_masks_are_exactly_the_pasted_cells_of_their_type(lib):
    cc = sc.generate_coculture(lib, seed=3, counts=25, max_overlap=0.3, **EXACT)
    assert cc.labels.shape == cc.image.shape and cc.image.dtype == np.uint8
    assert cc.labels.dtype == np.uint16 and len(cc.types) > 20
    # every pixel shows its origin: background, or the shade of the type on top there
    kinds = np.zeros(cc.labels.shape, object)
    kinds[:] = ""
    for i, t in cc.types.items():
        kinds[cc.labels == i] = t
    expected = np.full(cc.image.shape, BG)
    for t in ("A", "B"):
        expected[kinds == t] = round(BG * SHADE[t])
    np.testing.assert_array_equal(cc.image, expected)
    # each instance is one piece, and the type mapping is complete and only of these ids
    assert set(cc.types) == set(np.unique(cc.labels[cc.labels > 0]).tolist())
    for i in cc.types:
        assert ndi.label(cc.labels == i)[1] == 1


def test_overlap_limit_holds_and_later_cells_occlude_earlier_ones(lib):
    full = {"A": SHAPES["A"].sum(), "B": SHAPES["B"].sum()}
    cc = sc.generate_coculture(lib, seed=1, counts=40, shape=(90, 90), max_overlap=0.25, **EXACT)
    areas = np.bincount(cc.labels.ravel())
    lost = [1 - areas[i] / full[t] for i, t in cc.types.items()]
    assert max(lost) <= 0.25 + 1e-9
    assert max(lost) > 0  # crowded: some cells were covered, so the limit was tested
    apart = sc.generate_coculture(lib, seed=1, counts=40, shape=(90, 90), max_overlap=0, **EXACT)
    areas = np.bincount(apart.labels.ravel())
    assert all(areas[i] == full[t] for i, t in apart.types.items())


def test_a_new_cell_covers_at_most_max_overlap_of_itself_and_splits_no_cell():
    labels = np.zeros((40, 40), np.int64)
    labels[5:25, 5:25] = 1  # a placed cell of 400 px
    area0, boxes = {1: 400}, {1: (slice(5, 25), slice(5, 25))}
    new = np.ones((10, 10), bool)  # 100 px

    def allowed(y, x, limit=0.25, mask=new):
        box = (slice(y, y + mask.shape[0]), slice(x, x + mask.shape[1]))
        return sc._allowed(labels, mask, box, area0, boxes, limit)

    assert not allowed(22, 10)  # 30 of its 100 px on the cell: 30 % > 25 % (the cell loses 7.5 %)
    assert allowed(23, 10)  # 20 %
    band = np.ones((3, 30), bool)
    assert not allowed(12, 0, limit=1.0, mask=band)  # across the cell: it would be cut in two
    assert allowed(22, 0, limit=1.0, mask=band)  # along its edge
    assert allowed(30, 30, limit=0.0)


def test_backgrounds_hold_no_cell_and_keep_their_noise():
    rng = np.random.default_rng(0)
    pairs = []
    for seed in range(4):
        image, labels = field("A", seed, n=8)
        ramp = np.linspace(-30, 30, image.shape[1])[None, :]
        noisy = BG + ramp + rng.normal(0, 4, image.shape)
        noisy[labels > 0] *= SHADE["A"]
        pairs.append((np.clip(noisy, 0, 255).astype(np.uint8), labels))
    names = [f"n_p{i % 2}_t{i}" for i in range(4)]
    lib = cs.build_library([cs.source_from_pairs(pairs, name="A", names=names), source("B")])
    none = {"A": 0, "B": 0}
    for seed in range(40):
        cc = sc.generate_coculture(lib, seed=seed, counts=none, debris=0.0)
        if not np.isin(cc.image, [BG]).all():  # a noisy "A" background
            img = cc.image.astype(float)
            fine = img - ndi.uniform_filter(img, 9)
            local = np.sqrt(ndi.uniform_filter(fine**2, 9))
            assert img.min() > BG - 30 - 6 * 4  # the dark cells are gone
            assert local[9:-9, 9:-9].min() > 0.5 * fine.std()  # no smooth, noiseless patch
            return
    pytest.fail("no noisy background drawn in 40 seeds")


def test_any_angle_and_scale_keep_masks_on_the_cells(lib):
    cc = sc.generate_coculture(lib, seed=5, counts=12, match_contrast=0.0, debris=0.0)
    inside = ndi.binary_erosion(cc.labels > 0)
    assert inside.any() and (cc.image[inside] < 0.8 * BG).all()
    far = ndi.distance_transform_edt(cc.labels == 0) > 2
    assert (cc.image[far] == BG).all()


def test_deterministic_per_seed_and_different_across_seeds(lib):
    a, b = (sc.generate_coculture(lib, seed=11) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.types == b.types
    c = sc.generate_coculture(lib, seed=12)
    assert c.image.shape != a.image.shape or not np.array_equal(a.labels, c.labels)


def test_any_number_of_sources_and_per_type_outputs():
    lib3 = cs.build_library([source("A"), source("B"), source("C")], halo=2)
    cc = sc.generate_coculture(lib3, seed=0, counts={"A": 3, "B": 3, "C": 4}, **EXACT)
    assert sorted(cc.types.values()) == ["A"] * 3 + ["B"] * 3 + ["C"] * 4
    per_type = cc.type_labels()
    assert set(per_type) == {"A", "B", "C"}
    for t, lab in per_type.items():
        assert sorted(np.unique(lab[lab > 0])) == list(
            range(1, list(cc.types.values()).count(t) + 1)
        )
        np.testing.assert_array_equal(
            lab > 0, np.isin(cc.labels, [i for i, k in cc.types.items() if k == t])
        )
    cls = cc.class_mask()
    for i, t in cc.types.items():
        assert (cls[cc.labels == i] == 1 + cc.type_names.index(t)).all()
    assert (cls[cc.labels == 0] == 0).all()


def test_test_fields_are_apart_from_training_fields(tmp_path):
    sources = [source("A", positions=4), source("B", positions=3)]
    train, test = cs.split_sources(sources, seed=7)
    for tr, te in zip(train, test, strict=True):
        assert tr.fields and te.fields
        assert not {f.group for f in tr.fields} & {f.group for f in te.fields}
        assert len(tr.fields) + len(te.fields) == len(
            next(s for s in sources if s.name == tr.name).fields
        )
    again = cs.split_sources(sources, seed=7)
    assert [[f.name for f in s.fields] for s in again[1]] == [
        [f.name for f in s.fields] for s in test
    ]

    manifest = sc.write_dataset(sources, tmp_path, n_train=3, n_test=2, seed=7, halo=2)
    assert manifest == json.loads((tmp_path / "manifest.json").read_text())
    tr, te = set(manifest["train"]["fields"]), set(manifest["test"]["fields"])
    assert tr and te and not tr & te
    test_names = {f"{s.name}:{f.name}" for s in test for f in s.fields}
    assert te <= test_names
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == sorted(
        f"test{i:05d}_{k}.tif" for i in range(2) for k in ("image", "A", "B")
    )
    image = tifffile.imread(tmp_path / "train" / "train00000_image.tif")
    mask_a = tifffile.imread(tmp_path / "train" / "train00000_A.tif")
    assert image.dtype == np.uint8 and mask_a.dtype == np.uint16 and mask_a.shape == image.shape
    assert mask_a.max() >= 1


def test_two_workers_write_the_same_dataset_as_one(tmp_path):
    sources = [source("A", positions=4), source("B", positions=3)]
    one = sc.write_dataset(sources, tmp_path / "one", n_train=3, n_test=2, seed=7, halo=2)
    two = sc.write_dataset(
        sources, tmp_path / "two", n_train=3, n_test=2, seed=7, halo=2, workers=2
    )
    assert one == two
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.tif"))
    assert len(files) == 15
    for f in files:
        assert np.array_equal(
            tifffile.imread(tmp_path / "one" / f), tifffile.imread(tmp_path / "two" / f)
        )


def test_one_position_only_cannot_be_split():
    one = cs.source_from_pairs(
        [field("A", 1), field("A", 2)], name="A", names=["a_p1_t1", "a_p1_t2"]
    )
    with pytest.raises(ValueError, match="two or more positions"):
        cs.split_sources([one, source("B")])


def test_clear_errors():
    empty = np.zeros((50, 50), np.uint16)
    with pytest.raises(ValueError, match="no cells.*annotated"):
        cs.source_from_pairs([(np.full((50, 50), BG, np.uint8), empty)], name="A")
    with pytest.raises(ValueError, match=r"\(50, 50\).*\(50, 40\).*same shape"):
        cs.source_from_pairs(
            [(np.zeros((50, 50), np.uint8), np.zeros((50, 40), np.uint16))], name="A"
        )
    with pytest.raises(ValueError, match="2 or more sources"):
        cs.build_library([source("A")])
    with pytest.raises(ValueError, match="distinct"):
        cs.build_library([source("A"), source("A")])
    edge = np.zeros((50, 50), np.uint16)
    edge[:6, 10:20] = 1  # a cell cut by the border is no cell to paste
    with pytest.raises(ValueError, match="no whole cell"):
        cs.build_library(
            [cs.source_from_pairs([(np.full((50, 50), BG, np.uint8), edge)], name="E"), source("B")]
        )
    img16 = [(a.astype(np.uint16), b) for a, b in (field("B", 1), field("B", 2))]
    with pytest.raises(ValueError, match="one library per modality"):
        cs.build_library([source("A"), cs.source_from_pairs(img16, name="B16")])
    with pytest.raises(ValueError, match="cell type name"):
        cs.source_from_pairs([field("A", 1)], name="a/b")


def test_binary_masks_are_split_at_their_nuclei():
    cell = np.zeros((40, 60), bool)
    cell[10:30, 10:30] = cell[10:30, 28:50] = True  # two touching cells, one component
    nucleus = np.zeros_like(cell)
    nucleus[18:22, 17:21] = nucleus[18:22, 38:42] = True
    lab = cs.instances_from_binary(cell, nucleus)
    assert lab.max() == 2 and lab[20, 19] != lab[20, 40] and ((lab > 0) == cell).all()
    assert cs.instances_from_binary(cell).max() == 1


@pytest.mark.data
def test_real_aisegcell_sources(shared_data):
    folder = shared_data / "brightfield_aisegcell" / "nucleus_cell"
    mkp = cs.source_from_folder(folder, name="MkP", prefix="181024TK20_p0002", pixel_size=0.62)
    gmp = cs.source_from_folder(folder, name="GMP", prefix="210930MA20_p0003", pixel_size=0.62)
    lib = cs.build_library([mkp, gmp])
    assert min(len(lib.cells["MkP"]), len(lib.cells["GMP"])) >= 10
    cc = sc.generate_coculture(lib, seed=0, counts=15)
    assert cc.image.dtype == np.uint8 and cc.image.shape == (1024, 1024)
    assert sorted(cc.types.values()) == ["GMP"] * 15 + ["MkP"] * 15
    assert {f.split(":")[0] for f in cc.fields} == {"MkP", "GMP"}
    # the cells are where the masks are: the image varies more inside them than far away
    far = ndi.distance_transform_edt(cc.labels == 0) > 15
    grad = np.hypot(*np.gradient(cc.image.astype(float)))
    assert grad[cc.labels > 0].mean() > 2 * grad[far].mean()
