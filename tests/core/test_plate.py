"""Plates: fields found by their file names (core, no Qt)."""

from __future__ import annotations

import pytest

from napari_cultureseg.core.plate import (
    PlateError,
    discover_plate,
    normalise_well,
    well_position,
)


def test_well_field_names_give_wells_fields_and_channels(tmp_path):
    names = ["A01_s1.tif", "A01_s2.tif", "B12_s1.tif", "A1_s3.tif", "notes.txt", "A01_s1_cell.tif"]
    plate = discover_plate(tmp_path, files=names)
    assert plate.layout == "well_field"
    assert plate.wells == ["A01", "B12"]
    assert [f.index for f in plate.fields_of("A1")] == [1, 2, 3]
    assert plate.fields_of("A01")[2].path().name == "A1_s3.tif"
    assert [p.name for p in plate.ignored] == ["A01_s1_cell.tif"]  # reported, not a field
    assert plate.shape == (8, 12)
    with_channels = discover_plate(tmp_path, files=["C03_s1_w1.tif", "C03_s1_w2.tif"])
    (f,) = with_channels.fields
    assert (f.well, f.index, sorted(f.channels)) == ("C03", 1, ["1", "2"])
    assert f.path("2").name == "C03_s1_w2.tif"
    with pytest.raises(PlateError, match="no channel '3'.*'1', '2'"):
        f.path("3")


def test_imagexpress_names_with_plate_prefix_guid_and_thumbnails(tmp_path):
    names = [
        "My_Plate_A01_s1_w1.tif",
        "My_Plate_A01_s1_w2.tif",
        "My_Plate_A01_s2_w1B1A2C3D4-1234-5678-9ABC-DEF012345678.tif",
        "My_Plate_H12_s1_w1_thumb.tif",
        "My_Plate_P24_w1.tif",  # one field: no _s
    ]
    plate = discover_plate(tmp_path, files=names)
    assert plate.layout == "imagexpress"
    assert [(f.well, f.index, sorted(f.channels)) for f in plate.fields] == [
        ("A01", 1, ["1", "2"]),
        ("A01", 2, ["1"]),
        ("P24", 1, ["1"]),
    ]
    assert plate.shape == (16, 24)


def test_operetta_names_give_rows_and_columns_as_numbers(tmp_path):
    names = [
        "r01c01f01p01-ch1sk1fk1fl1.tiff",
        "r01c01f01p01-ch2sk1fk1fl1.tiff",
        "r02c05f03p01-ch1sk1fk1fl1.tiff",
    ]
    plate = discover_plate(tmp_path, files=names)
    assert plate.layout == "operetta"
    assert [(f.well, f.index, sorted(f.channels)) for f in plate.fields] == [
        ("A01", 1, ["1", "2"]),
        ("B05", 3, ["1"]),
    ]
    assert plate.channels == ["1", "2"]
    assert [p.name for p in plate.files("1")] == [names[0], names[2]]


def test_a_users_pattern(tmp_path):
    names = ["exp7_D04_field2_DAPI.png", "exp7_D04_field2_phase.png", "exp7_D05_field1_phase.png"]
    plate = discover_plate(tmp_path, "{plate}_{well}_field{field}_{channel}.png", files=names)
    assert [(f.key, sorted(f.channels)) for f in plate.fields] == [
        ("D04_f2", ["DAPI", "phase"]),
        ("D05_f1", ["phase"]),
    ]
    rows = discover_plate(tmp_path, "row{row}_col{col}.tif", files=["row3_col7.tif"])
    assert rows.wells == ["C07"]


@pytest.mark.parametrize(
    "layout, message",
    [
        ("{well}_{fld}.tif", "unknown field"),
        ("{field}.tif", "names no well"),
        ("{well}_{row}{col}.tif", "not both"),
        ("{well}_{field}_{field}.tif", "twice"),
        ("cellomics", "unknown plate layout"),
    ],
)
def test_bad_patterns_say_what_to_use(tmp_path, layout, message):
    with pytest.raises(PlateError, match=message):
        discover_plate(tmp_path, layout, files=["A01_1.tif"])


def test_a_folder_that_is_no_plate_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(PlateError, match="not a folder"):
        discover_plate(tmp_path / "missing")
    with pytest.raises(PlateError, match="no image files"):
        discover_plate(tmp_path, files=["a.txt"])
    with pytest.raises(PlateError, match="name the layout"):
        discover_plate(tmp_path, files=["image1.tif", "image2.tif"])
    with pytest.raises(PlateError, match="both well A01, field 1"):
        discover_plate(tmp_path, "{well}_{any}.tif", files=["A01_x.tif", "A01_y.tif"])


def test_a_real_folder_is_listed(tmp_path):
    for name in ("B02_s1.tif", "B02_s2.tif", "B03_s1.tif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    plate = discover_plate(tmp_path)
    assert [f.key for f in plate.fields] == ["B02_f1", "B02_f2", "B03_f1"]
    assert plate.fields[0].path() == tmp_path / "B02_s1.tif"


def test_well_names():
    assert normalise_well("a1") == "A01" and normalise_well(row="2", col="5") == "B05"
    assert normalise_well(row="27", col="48") == "AA48"
    assert well_position("A01") == (0, 0) and well_position("P24") == (15, 23)
    assert well_position("AF48") == (31, 47)
    for bad in ("Z0", "A49", "ZZ01", "01A"):
        with pytest.raises(PlateError):
            normalise_well(bad)


def test_the_plate_command_shows_what_a_folder_holds(tmp_path, capsys):
    from napari_cultureseg.cli import main

    for name in ("r01c02f01p01-ch1sk1fk1fl1.tiff", "r01c02f02p01-ch1sk1fk1fl1.tiff", "x.png"):
        (tmp_path / name).write_bytes(b"")
    assert main(["plate", str(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out
    assert "operetta layout" in out and "1 wells, 2 fields each" in out
    assert "A02_f2  1: r01c02f02p01-ch1sk1fk1fl1.tiff" in out
    assert "not read as fields (1): x.png" in out
    assert main(["plate", str(tmp_path), "--pattern", "{field}.tif"]) == 2
    assert "names no well" in capsys.readouterr().err


def test_planes_and_time_points_are_fields_of_their_own_only_when_they_vary(tmp_path):
    names = [f"r01c01f01p0{p}-ch1sk{t}fk1fl1.tiff" for p in (1, 2) for t in (1, 3)]
    plate = discover_plate(tmp_path, files=names)
    assert [f.key for f in plate.fields] == [
        "A01_f1_p1_t1",
        "A01_f1_p1_t3",
        "A01_f1_p2_t1",
        "A01_f1_p2_t3",
    ]
