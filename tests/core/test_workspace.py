import json
import os

import numpy as np
import pytest
from scipy import ndimage

from napari_cultureseg.core import workspace as wsmod
from napari_cultureseg.core.autosave import Autosaver
from napari_cultureseg.core.workspace import Workspace
from napari_cultureseg.core.workspace_files import (
    JOURNAL,
    META,
    WorkspaceError,
    key_for_array,
    key_for_path,
    list_workspaces,
    read_journal,
)

CLASSES = [("cell", "#39ff14"), ("debris", "#ff00ff")]


def _open(root, key="img1", shape=(24, 32), **kw):
    return Workspace.open(
        key,
        root=root,
        image_name="set01_a.tif",
        shape=shape,
        classes=kw.pop("classes", CLASSES),
        **kw,
    )


def _state(ws):
    masks = {n: m.copy() for n, m in ws.masks.items()}
    return masks, {n: r.copy() for n, r in ws.reviewed.items()}, ws.journal()


def _assert_same(a, b):
    masks_a, rev_a, journal_a = a
    masks_b, rev_b, journal_b = b
    assert masks_a.keys() == masks_b.keys() and rev_a.keys() == rev_b.keys()
    for n in masks_a:
        np.testing.assert_array_equal(masks_a[n], masks_b[n])
        np.testing.assert_array_equal(rev_a[n], rev_b[n])
    assert journal_a == journal_b


def _edited(ws, rng=None):
    rng = rng or np.random.default_rng(0)
    seg = rng.random(ws.shape) > 0.7
    ws.set_mask("cell", seg, kind="segment", model="phase-cells")
    painted = ws.masks["cell"].copy()
    painted[3:6, 4:9] = 1
    ws.apply_edit("cell", painted, kind="paint", margin=2)
    ws.accept_region("debris", (0, 0, 5, 7))
    return ws


def test_round_trip_restores_masks_reviewed_journal_and_meta(tmp_path):
    ws = _edited(_open(tmp_path))
    assert ws.save() is True
    before = _state(ws)
    again = Workspace.open("img1", root=tmp_path)
    _assert_same(before, _state(again))
    assert again.shape == (24, 32) and again.image_name == "set01_a.tif"
    assert again.colours == dict(CLASSES)
    assert [m["model"] for m in again.models] == ["phase-cells"]
    assert [e.kind for e in again.journal()] == ["segment", "paint", "accept_view"]
    assert again.masks["cell"].dtype == np.uint8 and set(np.unique(again.masks["cell"])) <= {0, 1}
    assert again.reviewed["cell"].dtype == bool
    assert not again.dirty and again.save() is False


def test_nothing_reaches_disk_until_something_changes_and_unchanged_save_is_free(tmp_path):
    ws = _open(tmp_path)
    assert not ws.dirty and not (tmp_path / "img1").exists()
    ws.accept_region("cell", (0, 0, 2, 2))
    ws.save()
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "img1").iterdir()}
    assert ws.save() is False
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "img1").iterdir()}


def test_apply_edit_marks_exactly_the_changed_pixels_grown_by_a_square(tmp_path):
    ws = _open(tmp_path, shape=(12, 12))
    new = np.zeros((12, 12), np.uint8)
    new[5, 5] = new[5, 6] = 1
    assert ws.apply_edit("cell", new, kind="paint", margin=1) == (5, 5, 6, 7)
    expected = np.zeros((12, 12), bool)
    expected[4:7, 4:8] = True  # rows 5±1, columns 5..6 ± 1
    np.testing.assert_array_equal(ws.reviewed["cell"], expected)
    np.testing.assert_array_equal(ws.masks["cell"], new)
    assert not ws.reviewed["debris"].any()
    # an erase at the corner, margin 2: clipped to the image
    new[5, 5] = 0
    new[0, 0] = 1
    assert ws.apply_edit("cell", new, kind="erase", margin=2) == (0, 0, 6, 6)
    expected[0:3, 0:3] = True
    expected[3:8, 3:8] = True  # (5, 5) ± 2
    np.testing.assert_array_equal(ws.reviewed["cell"], expected)
    entry = ws.journal()[-1]
    assert (entry.cls, entry.kind, entry.bbox, entry.changed) == ("cell", "erase", (0, 0, 6, 6), 2)
    # no change: nothing reviewed, no journal line
    assert ws.apply_edit("cell", new, kind="paint") is None
    assert len(ws.journal()) == 2


@pytest.mark.parametrize("margin", [0, 1, 3, 8])
def test_apply_edit_equals_a_square_dilation_of_the_changes(tmp_path, margin):
    rng = np.random.default_rng(margin)
    ws = _open(tmp_path, shape=(40, 50))
    ws.set_mask("cell", rng.random((40, 50)) > 0.5, kind="segment")
    new = ws.masks["cell"].copy()
    flips = rng.random((40, 50)) > 0.995
    new[flips] ^= 1
    ws.apply_edit("cell", new * 7, kind="fill", margin=margin)  # labels: any non-zero is 1
    square = np.ones((2 * margin + 1, 2 * margin + 1), bool)
    np.testing.assert_array_equal(ws.reviewed["cell"], ndimage.binary_dilation(flips, square))
    np.testing.assert_array_equal(ws.masks["cell"], new)
    assert ws.journal()[-1].changed == flips.sum()


def test_set_mask_leaves_reviewed_alone_and_journals_the_model(tmp_path):
    ws = _open(tmp_path)
    ws.accept_region("cell", (0, 0, 4, 4))
    reviewed = ws.reviewed["cell"].copy()
    mask = np.zeros(ws.shape, bool)
    mask[2:4, 10:20] = True
    assert ws.set_mask("cell", mask, kind="segment", model="v2") == (2, 10, 4, 20)
    np.testing.assert_array_equal(ws.reviewed["cell"], reviewed)
    e = ws.journal()[-1]
    assert (e.kind, e.bbox, e.changed, e.model) == ("segment", (2, 10, 4, 20), 20, "v2")
    with pytest.raises(WorkspaceError, match="kind"):
        ws.set_mask("cell", mask, kind="brush")
    with pytest.raises(WorkspaceError, match="shape"):
        ws.set_mask("cell", mask[1:], kind="segment")
    with pytest.raises(WorkspaceError, match="no class 'nucleus'"):
        ws.set_mask("nucleus", mask, kind="segment")


def test_masks_are_read_only_views(tmp_path):
    ws = _open(tmp_path)
    with pytest.raises(ValueError):
        ws.masks["cell"][0, 0] = 1
    with pytest.raises(ValueError):
        ws.reviewed["cell"][0, 0] = True


def test_accept_region_rounds_outward_clips_and_counts_new_pixels(tmp_path):
    ws = _open(tmp_path, shape=(10, 10))
    assert ws.accept_region("cell", (2.5, -3, 4.2, 3)) == 3 * 3  # rows 2..4, cols 0..2
    expected = np.zeros((10, 10), bool)
    expected[2:5, 0:3] = True
    np.testing.assert_array_equal(ws.reviewed["cell"], expected)
    assert ws.accept_region("cell", (2, 0, 5, 4)) == 3  # only column 3 is new
    assert ws.accept_region(None, (8, 8, 20, 20)) == 2 * 4  # both classes, clipped
    assert ws.reviewed["debris"][8:, 8:].all() and ws.reviewed["debris"].sum() == 4
    assert ws.accept_region("cell", (20, 20, 30, 30)) == 0
    assert [(e.cls, e.kind, e.bbox) for e in ws.journal()][-2:] == [
        ("cell", "accept_view", (8, 8, 10, 10)),
        ("debris", "accept_view", (8, 8, 10, 10)),
    ]


def test_samples_target_is_masks_and_valid_is_reviewed(tmp_path):
    ws = _edited(_open(tmp_path))
    image = np.random.default_rng(1).random((1, 24, 32)).astype(np.float32)
    s = ws.samples(image)
    assert s.target.shape == s.valid.shape == (2, 24, 32) and s.target.dtype == np.uint8
    for k, n in enumerate(ws.class_names):
        np.testing.assert_array_equal(s.target[k], ws.masks[n])
        np.testing.assert_array_equal(s.valid[k], ws.reviewed[n])
    assert s.name == "set01_a.tif" and s.group == "set01"
    # the model's class order; a class the workspace lacks is unknown everywhere
    s2 = ws.samples(image[0], classes=["debris", "nucleus", "cell"])
    np.testing.assert_array_equal(s2.valid[0], ws.reviewed["debris"])
    assert not s2.valid[1].any() and not s2.target[1].any()
    np.testing.assert_array_equal(s2.target[2], ws.masks["cell"])
    with pytest.raises(WorkspaceError, match="expected"):
        ws.samples(image[:, :10])
    # a model that splits objects by a distance map (as the bundled real-data models do)
    # gets its distance channels too: known where reviewed, on background and on lone
    # (convex) objects; painted masks do not know where touching cells meet
    from napari_cultureseg.core.bundle_config import ClassSpec

    specs = [ClassSpec("debris"), ClassSpec("cell", instances=True, separate="distance")]
    s3 = ws.samples(image, classes=specs)
    assert s3.target.shape == s3.valid.shape == (3, 24, 32)
    np.testing.assert_array_equal(s3.target[1], ws.masks["cell"])
    from napari_cultureseg.core.targets import distances, lone_objects

    lone, known = lone_objects(ws.masks["cell"])
    np.testing.assert_array_equal(s3.valid[2], known & ws.reviewed["cell"])
    np.testing.assert_allclose(s3.target[2], distances(lone))
    assert s3.valid[2].any() and not s3.valid[2].all()


def test_autosaver_saves_only_when_dirty_and_after_the_interval(tmp_path, monkeypatch):
    ws = _open(tmp_path)
    saves = []
    real_save = ws.save
    monkeypatch.setattr(ws, "save", lambda force=False: saves.append(1) or real_save(force))
    auto = Autosaver(ws, interval=1.0, clock=lambda: pytest.fail("now is passed explicitly"))
    assert auto.maybe_save(now=0.0) is False and not saves  # nothing changed
    ws.accept_region("cell", (0, 0, 3, 3))
    assert auto.maybe_save(now=10.0) is True and len(saves) == 1  # first change: at once
    ws.accept_region("cell", (0, 0, 5, 5))
    assert auto.maybe_save(now=10.5) is False and len(saves) == 1  # too soon
    assert auto.maybe_save(now=10.99) is False
    assert auto.maybe_save(now=11.0) is True and len(saves) == 2
    assert auto.maybe_save(now=20.0) is False and len(saves) == 2  # clean again
    auto.touch()
    assert auto.maybe_save(now=20.2) is True and len(saves) == 3
    assert Workspace.open("img1", root=tmp_path).reviewed["cell"][:5, :5].all()


def test_autosaver_before_save_pulls_edits_in_once_per_save(tmp_path):
    ws = _open(tmp_path)
    layer = np.zeros(ws.shape, np.uint8)
    auto = Autosaver(ws, before_save=lambda: ws.apply_edit("cell", layer, kind="paint"))
    layer[1:3, 1:3] = 1  # strokes on a layer: the GUI only touches
    auto.touch()
    assert auto.maybe_save(now=0.0) is True
    assert Workspace.open("img1", root=tmp_path).masks["cell"][1:3, 1:3].all()
    layer[5, 5] = 1
    auto.touch()
    assert auto.maybe_save(now=0.3) is False
    assert auto.flush(now=0.4) is True  # closing: no waiting
    assert Workspace.open("img1", root=tmp_path).masks["cell"][5, 5] == 1


def test_a_crash_during_save_leaves_the_saved_state_intact(tmp_path, monkeypatch):
    ws = _edited(_open(tmp_path))
    ws.save()
    saved = _state(ws)
    ws.set_mask("cell", np.ones(ws.shape), kind="segment")
    ws.accept_region(None, (0, 0, 24, 32))
    ws.record_model("v2")

    def boom(*args):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="killed"):
        ws.save()
    monkeypatch.undo()
    _assert_same(saved, _state(Workspace.open("img1", root=tmp_path)))
    assert not [p for p in (tmp_path / "img1").iterdir() if ".tmp-" in p.name]
    assert ws.dirty and ws.save() is True  # nothing was forgotten: the retry writes it all
    again = Workspace.open("img1", root=tmp_path)
    assert again.masks["cell"].all() and again.reviewed["debris"].all()
    assert [m["model"] for m in again.models] == ["phase-cells", "v2"]


def test_a_truncated_last_journal_line_is_tolerated_and_set_aside(tmp_path):
    ws = _edited(_open(tmp_path))
    ws.save()
    entries = ws.journal()
    path = tmp_path / "img1" / JOURNAL
    with open(path, "ab") as f:
        f.write(b'{"time": "2026-01-01T00:00:00.000+00:00", "class": "ce')  # killed mid-line
    assert read_journal(path) == entries
    ws = Workspace.open("img1", root=tmp_path)
    assert ws.journal() == entries
    ws.accept_region("cell", (0, 0, 1, 1))
    ws.save()
    assert len(read_journal(path)) == len(entries) + 1
    assert path.read_bytes().endswith(b"\n")
    assert b'"class": "ce' in (path.parent / (JOURNAL + ".partial")).read_bytes()
    # a damaged line in the middle is an error, not silently skipped
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b"garbage"] + lines[1:]))
    with pytest.raises(WorkspaceError, match="line 2"):
        read_journal(path)


def test_shape_mismatch_and_corrupt_files_raise_and_delete_nothing(tmp_path):
    _edited(_open(tmp_path)).save()
    folder = tmp_path / "img1"
    with pytest.raises(WorkspaceError, match=r"shape \(24, 32\).*\(24, 33\)"):
        _open(tmp_path, shape=(24, 33))
    mask_file = next(p for p in folder.iterdir() if p.suffix == ".tif")
    mask_file.write_bytes(mask_file.read_bytes()[:60])  # truncated
    with pytest.raises(WorkspaceError, match="cannot be read.*move"):
        Workspace.open("img1", root=tmp_path)
    (folder / META).write_text("{not json")
    with pytest.raises(WorkspaceError, match="workspace.json"):
        Workspace.open("img1", root=tmp_path)
    assert mask_file.exists() and (folder / META).read_text() == "{not json"
    with pytest.raises(WorkspaceError, match="to create one give shape="):
        Workspace.open("other", root=tmp_path)
    with pytest.raises(WorkspaceError, match="folder name"):
        Workspace.open("../escape", root=tmp_path, shape=(4, 4))


def test_a_mask_file_of_the_wrong_shape_is_reported(tmp_path):
    import tifffile

    _edited(_open(tmp_path)).save()
    mask_file = next(p for p in (tmp_path / "img1").iterdir() if p.suffix == ".tif")
    tifffile.imwrite(mask_file, np.zeros((2, 24, 31), bool))
    with pytest.raises(WorkspaceError, match=r"shape \(2, 24, 31\), expected \(2, 24, 32\)"):
        Workspace.open("img1", root=tmp_path)


def test_reopening_adds_new_classes_and_keeps_the_others(tmp_path):
    _edited(_open(tmp_path)).save()
    classes = [("nucleus", "#30b0ff"), ("cell", "#000000")]
    ws = Workspace.open("img1", root=tmp_path, classes=classes)
    assert ws.class_names == ["cell", "debris", "nucleus"] and ws.colours["cell"] == "#000000"
    assert not ws.masks["nucleus"].any() and ws.dirty
    ws.save()
    again = Workspace.open("img1", root=tmp_path)
    assert again.class_names == ["cell", "debris", "nucleus"] and again.colours["cell"] == "#000000"


def test_list_workspaces_summarises_without_loading_masks(tmp_path):
    _edited(_open(tmp_path)).save()
    ws = _open(tmp_path, key="img2", shape=(8, 8), classes=["cell"])
    ws.accept_region("cell", (0, 0, 2, 3))
    ws.save()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / META).write_text("[]")
    (tmp_path / "not-a-workspace").mkdir()
    found = {s.key: s for s in list_workspaces(tmp_path)}
    assert set(found) == {"img1", "img2", "broken"}
    assert found["img2"].reviewed == {"cell": 6} and found["img2"].shape == (8, 8)
    assert found["img1"].classes == ("cell", "debris") and found["img1"].reviewed["debris"] == 35
    assert found["img1"].image_name == "set01_a.tif" and found["img1"].modified
    assert found["broken"].error and not found["img1"].error
    assert list_workspaces(tmp_path / "absent") == []


def test_default_root_is_under_the_cultureseg_home(cultureseg_home):
    ws = Workspace.open("abc", image_name="x", shape=(4, 4), classes=["cell"])
    ws.accept_region("cell", (0, 0, 1, 1))
    ws.save()
    assert (cultureseg_home / "workspaces" / "abc" / META).is_file()
    assert [s.key for s in list_workspaces()] == ["abc"]
    meta = json.loads((cultureseg_home / "workspaces" / "abc" / META).read_text())
    assert meta["format"] == wsmod.FORMAT and meta["image"]["shape"] == [4, 4]


def test_key_for_path_is_stable_and_follows_the_file(tmp_path):
    f = tmp_path / "a.tif"
    f.write_bytes(b"1234")
    k = key_for_path(f)
    assert k == key_for_path(str(f)) == key_for_path(tmp_path / "." / "a.tif")
    assert len(k) == 16
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    k2 = key_for_path(f)
    assert k2 != k
    f.write_bytes(b"12345")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same mtime, new size
    assert key_for_path(f) not in (k, k2)
    g = tmp_path / "b.tif"
    g.write_bytes(b"1234")
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key_for_path(g) != k  # same size and mtime, another file


def test_key_for_array_is_stable_and_sees_shape_dtype_and_pixels():
    a = np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8)
    k = key_for_array(a)
    assert k == key_for_array(a.copy()) and len(k) == 16
    b = a.copy()
    b[0, 0] += 1
    assert key_for_array(b) != k
    assert key_for_array(a.astype(np.uint16)) != k
    assert key_for_array(a[:, :399]) != k
    big = np.zeros((10_000, 10_000), np.uint8)
    assert key_for_array(big) != key_for_array(big[:, :9_999])
