"""The one atomic writer: a failed write leaves the old file whole and no temporary behind."""

import pytest

from napari_cultureseg.core.atomic import swap_in, write_atomic


@pytest.mark.parametrize("durable", [False, True])
def test_a_write_replaces_the_file_whole_and_a_failed_one_changes_nothing(tmp_path, durable):
    path = tmp_path / "masks.csv"
    write_atomic(path, lambda tmp: tmp.write_text("old"), durable=durable)
    assert path.read_text() == "old"

    def half_then_crash(tmp):
        tmp.write_text("half of the ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_crash, durable=durable)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.csv"]
    assert write_atomic(path, lambda tmp: tmp.write_text("new"), durable=durable) == path
    assert path.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_a_folder_is_swapped_in_whole(tmp_path):
    path, new = tmp_path / "field.ome.zarr", tmp_path / ".field.tmp"
    path.mkdir()
    (path / "old").write_text("1")
    new.mkdir()
    (new / "new").write_text("2")
    swap_in(new, path)
    assert [p.name for p in path.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["field.ome.zarr"]


def test_a_durable_write_flushes_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """A power cut after a durable save must find the new file: its bytes and the rename
    (an entry of the folder) are both flushed, in that order; a plain write flushes none."""
    import os
    import stat

    flushed = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (flushed.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd))
    )
    write_atomic(tmp_path / "c.tif", lambda tmp: tmp.write_bytes(b"x"), durable=True)
    assert flushed == [False, True]  # the file, then the folder
    flushed.clear()
    write_atomic(tmp_path / "d.tif", lambda tmp: tmp.write_bytes(b"x"))
    assert flushed == []
