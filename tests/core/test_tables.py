"""Object and well tables, against values computed by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_cultureseg.core.tables import object_rows, well_rows, write_csv


def field():
    """Two cells (10x10 squares, one holding a 4x4 nucleus, one a nucleus half out
    of it) and a third cell that only shares a border with the second."""
    cell = np.zeros((40, 40), np.int32)
    cell[0:10, 0:10] = 1
    cell[20:30, 0:10] = 2
    cell[20:30, 10:20] = 3
    nucleus = np.zeros_like(cell)
    nucleus[3:7, 3:7] = 1  # inside cell 1
    nucleus[22:26, 8:12] = 2  # half in cell 2, half in cell 3: in neither, touches both
    intensity = np.zeros((40, 40), np.float32)
    intensity[0:10, 0:10] = 2.0
    return {"cell": cell, "nucleus": nucleus}, intensity


def test_object_rows_measure_and_relate_overlapping_classes():
    objects, intensity = field()
    rows = object_rows(objects, intensity, info={"well": "A01", "field": "1"})
    by = {(r["class"], r["label"]): r for r in rows}
    assert len(rows) == 5
    c1 = by[("cell", 1)]
    assert list(c1)[:4] == ["well", "field", "class", "label"]
    assert c1["area"] == 100 and c1["mean_intensity"] == 2
    assert c1["equivalent_diameter"] == pytest.approx(2 * np.sqrt(100 / np.pi), abs=1e-3)
    assert (c1["centroid_y"], c1["centroid_x"]) == (4.5, 4.5) and c1["solidity"] == 1
    assert (c1["in_nucleus"], c1["contains_nucleus"], c1["touches_nucleus"]) == (0, 1, 0)
    assert (by[("cell", 2)]["contains_nucleus"], by[("cell", 2)]["touches_nucleus"]) == (0, 1)
    n1, n2 = by[("nucleus", 1)], by[("nucleus", 2)]
    assert n1["area"] == 16 and n1["in_cell"] == 1 and n1["touches_cell"] == 0
    # 8 of 16 pixels in cell 2 and 8 in cell 3: not more than half in either
    assert (n2["in_cell"], n2["contains_cell"], n2["touches_cell"]) == (0, 0, 2)
    # cells 2 and 3 share a border, but within one class objects are not related
    assert "in_cell" not in by[("cell", 3)]


def test_only_counted_classes_get_rows_and_mismatched_shapes_are_refused():
    objects, _ = field()
    rows = object_rows(objects, counted=["nucleus"])
    assert {r["class"] for r in rows} == {"nucleus"} and rows[0]["mean_intensity"] == ""
    with pytest.raises(ValueError, match="differ in shape"):
        object_rows({"a": np.zeros((4, 4), int), "b": np.zeros((5, 4), int)})


def test_well_rows_sum_fields(tmp_path):
    fields = [
        {"well": "B01", "pixels": 100, "areas": {"cell": 50}, "objects": {"cell": [20, 30]}},
        {"well": "A02", "pixels": 100, "areas": {"cell": 10}, "objects": {"cell": [10]}},
        {"well": "A02", "pixels": 300, "areas": {"cell": 30}, "objects": {"cell": []}},
    ]
    rows = well_rows(fields)
    assert [r["well"] for r in rows] == ["A02", "B01"]  # plate order
    a02 = rows[0]
    assert a02 == {
        "well": "A02",
        "fields": 2,
        "cell_count": 1,
        "cell_per_field": 0.5,
        "cell_mean_area": 10.0,
        "cell_area_pct": 10.0,  # 40 of 400 px: the confluence
    }
    assert rows[1]["cell_area_pct"] == 50.0 and rows[1]["cell_mean_area"] == 25.0
    write_csv(tmp_path / "wells.csv", rows)
    with open(tmp_path / "wells.csv") as f:
        back = list(csv.DictReader(f))
    assert back[1]["cell_count"] == "2" and list(back[0])[0] == "well"
