"""A batch run can be interrupted and resumed, and spread over dask workers, with the same files."""

from __future__ import annotations

import hashlib
import json

import pytest
import tifffile

from napari_cultureseg.cli import main
from napari_cultureseg.core.batch_outputs import RECORDS
from napari_cultureseg.core.synth import phase_culture


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _plate(tmp_path, n=3):
    src = tmp_path / "plate"
    src.mkdir()
    for i in range(n):
        tifffile.imwrite(src / f"A0{i + 1}_s1.tif", phase_culture((64, 80), seed=i)[0])
    return src


def _run(*args):
    return main(["segment", *map(str, args), "--model", "tiny", "--quiet", "--diameter", "none"])


def _outputs(out):
    return {p.name: _md5(p) for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_an_interrupted_run_resumes_without_losing_or_redoing_a_field(
    tiny_bundle, tmp_path, capsys
):
    src = _plate(tmp_path)
    whole = tmp_path / "whole"
    assert _run(src, "--out", whole, "--table") == 0
    expected = _outputs(whole)
    out = tmp_path / "out"
    assert _run(src, "--out", out, "--table") == 0
    # as a kill leaves it: A02 had begun writing (a record not done, one mask whole, the
    # rest absent), A03 had not started, and no table was written yet
    rec = out / RECORDS / "A02_s1.json"
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "done": False}))
    for name in ("A02_s1_debris.tif", "A02_s1_cell_instances.tif", "objects.csv"):
        (out / name).unlink()
    (out / RECORDS / "A03_s1.json").unlink()
    for name in ("A03_s1_cell.tif", "A03_s1_debris.tif", "A03_s1_cell_instances.tif"):
        (out / name).unlink()
    kept = {n: (out / n).stat().st_mtime_ns for n in ("A01_s1_cell.tif", "A01_s1_debris.tif")}
    capsys.readouterr()
    # without --resume the run refuses and says how to go on
    assert _run(src, "--out", out, "--table") == 2
    assert "--resume" in capsys.readouterr().err
    main(
        [
            "segment",
            str(src),
            "--out",
            str(out),
            "--model",
            "tiny",
            "--table",
            "--resume",
            "--diameter",
            "none",
        ]
    )
    said = capsys.readouterr().out
    assert "1 of 3 field(s) were done already" in said
    assert "A01_s1.tif" not in said and "A02_s1.tif" in said and "A03_s1.tif" in said
    # the finished field was not written again; everything equals an uninterrupted run
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert _outputs(out) == expected
    # resuming a finished run does nothing and still gives the tables
    assert _run(src, "--out", out, "--table", "--resume") == 0
    assert _outputs(out) == expected


def test_a_file_that_no_run_of_ours_wrote_is_never_overwritten_by_resume(tiny_bundle, tmp_path):
    src = _plate(tmp_path, n=1)
    out = tmp_path / "out"
    out.mkdir()
    tifffile.imwrite(out / "A01_s1_cell.tif", phase_culture((8, 8), seed=9)[0])  # the user's
    before = _md5(out / "A01_s1_cell.tif")
    assert _run(src, "--out", out, "--resume") == 2
    assert _md5(out / "A01_s1_cell.tif") == before


@pytest.mark.parametrize("how", ["workers", "scheduler"])
def test_dask_workers_write_what_one_process_writes(tiny_bundle, tmp_path, how):
    src = _plate(tmp_path)
    serial = tmp_path / "serial"
    assert _run(src, "--out", serial, "--table") == 0
    out = tmp_path / "dask"
    if how == "workers":
        assert _run(src, "--out", out, "--table", "--workers", "2") == 0
    else:  # a cluster that is already running, reached by its address
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            assert _run(src, "--out", out, "--table", "--scheduler", cluster.scheduler_address) == 0
    assert _outputs(out) == _outputs(serial)


def test_rank_lists_the_fields_most_uncertain_first(tiny_bundle, tmp_path):
    import csv

    import numpy as np

    from napari_cultureseg.core.bundle_config import ClassSpec
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.segmentation import Segmentation
    from napari_cultureseg.core.tiling import run_to_end

    sure = Segmentation(np.zeros((1, 8, 8), np.float32), (ClassSpec("a"),))
    unsure = Segmentation(np.full((1, 8, 8), 0.5, np.float32), (ClassSpec("a"),))
    assert sure.uncertainty() < 1e-4 and abs(unsure.uncertainty() - 1.0) < 1e-6
    src = _plate(tmp_path)
    out = tmp_path / "out"
    assert _run(src, "--out", out, "--rank") == 0
    with open(out / "rank.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    values = [float(r["uncertainty"]) for r in rows]
    assert values == sorted(values, reverse=True) and len(set(values)) == 3
    assert {r["well"] for r in rows} == {"A01", "A02", "A03"}
    image = tifffile.imread(src / f"{rows[0]['image']}.tif")
    direct = run_to_end(segment(tiny_bundle, image, device="cpu")).uncertainty()
    assert abs(direct - values[0]) < 1e-5


def test_resume_never_replaces_a_table_that_no_run_of_ours_wrote(tiny_bundle, tmp_path):
    src = _plate(tmp_path, n=1)
    out = tmp_path / "out"
    assert _run(src, "--out", out) == 0  # masks, records; no tables yet
    (out / "objects.csv").write_text("the user's own table\n")
    assert _run(src, "--out", out, "--table", "--resume") == 2
    assert (out / "objects.csv").read_text() == "the user's own table\n"


def test_a_field_job_writes_only_the_files_planned_for_it(tiny_bundle, tmp_path):
    from napari_cultureseg.core.batch import run_field
    from napari_cultureseg.core.batch_outputs import FieldJob

    src = _plate(tmp_path, n=1)
    out = tmp_path / "out"
    out.mkdir()
    planned = ("A01_s1_cell.tif",)  # the debris mask and the instances are not planned
    job = FieldJob(
        str(src / "A01_s1.tif"), "A01_s1", str(out), planned, "tiny", {"diameter": "none"}
    )
    done = run_field(job)
    assert done.error and "not planned" in done.error
    assert not (out / "A01_s1_debris.tif").exists()


def test_ome_zarr_output_holds_the_image_and_named_coloured_masks(tiny_bundle, tmp_path):
    """--format ome-zarr: one OME-Zarr image per field, its masks as label images named after
    the classes, coloured as the model colours them, equal to the TIFF masks of a tif run;
    read back by ome-zarr's own reader (what napari-ome-zarr uses)."""
    pytest.importorskip("ome_zarr")
    import numpy as np
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.omezarr import read_labels, rgba

    src = _plate(tmp_path, n=2)
    tif, zarr_out = tmp_path / "tif", tmp_path / "zarr"
    assert _run(src, "--out", tif) == 0
    assert _run(src, "--out", zarr_out, "--format", "ome-zarr", "--table") == 0
    fields = sorted(p.name for p in zarr_out.iterdir() if not p.name.startswith("."))
    assert fields == ["A01_s1.ome.zarr", "A02_s1.ome.zarr", "objects.csv", "wells.csv"]
    classes = load_bundle("tiny").config.classes
    for stem in ("A01_s1", "A02_s1"):
        labels = read_labels(zarr_out / f"{stem}.ome.zarr")
        for c in classes:
            mask = tifffile.imread(tif / f"{stem}_{c.name}.tif")
            np.testing.assert_array_equal(labels[c.name], mask)
            if c.instances:
                inst = tifffile.imread(tif / f"{stem}_{c.name}_instances.tif")
                np.testing.assert_array_equal(labels[f"{c.name}_instances"], inst)
        nodes = list(Reader(parse_url(str(zarr_out / f"{stem}.ome.zarr")))())
        image = np.asarray(nodes[0].data[0])
        np.testing.assert_array_equal(image, tifffile.imread(src / f"{stem}.tif"))
        colours = {n.metadata.get("name"): n.metadata.get("color") for n in nodes[1:]}
        for c in classes:
            expected = [v / 255 for v in rgba(c.colour)]
            assert np.allclose(colours[c.name][1], expected)
    # a resumed run finds every field done: nothing is rewritten
    stamp = (zarr_out / "A01_s1.ome.zarr" / ".zattrs").stat().st_mtime_ns
    assert _run(src, "--out", zarr_out, "--format", "ome-zarr", "--table", "--resume") == 0
    assert (zarr_out / "A01_s1.ome.zarr" / ".zattrs").stat().st_mtime_ns == stamp


def _hcs_plate(root, images):
    """An OME-Zarr HCS plate (NGFF 0.4) written by ome-zarr: ``images`` is
    ``{(row, col, field): (c, y, x) array}``, channels named "phase" and "dapi"."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    fmt = FormatV04()
    plate = zarr.open_group(str(root), mode="w", zarr_format=2)
    wells = sorted({(r, c) for r, c, _ in images})
    rows = sorted({r for r, _ in wells})
    cols = sorted({c for _, c in wells})
    write_plate_metadata(plate, rows, cols, [f"{r}/{c}" for r, c in wells], fmt=fmt)
    for r, c in wells:
        well = plate.require_group(r).require_group(c)
        fields = sorted(f for rr, cc, f in images if (rr, cc) == (r, c))
        write_well_metadata(well, [str(f) for f in fields], fmt=fmt)
        for f in fields:
            group = well.require_group(str(f))
            write_image(images[(r, c, f)], group, axes="cyx", scale_factors=[], fmt=fmt)
            group.attrs["omero"] = {"channels": [{"label": "phase"}, {"label": "dapi"}]}


def test_an_ome_zarr_plate_is_read_by_its_metadata_and_segmented_per_field(tiny_bundle, tmp_path):
    """An HCS plate (plate.zarr/A/1/0) is discovered from its NGFF metadata into wells x
    fields x channels; `segment --channel` segments that channel of every field, each
    field's masks named by its key and equal to segmenting the same plane from a TIFF."""
    pytest.importorskip("ome_zarr")
    import numpy as np

    from napari_cultureseg.core.plate import discover_plate

    images = {}
    for i, (r, c, f) in enumerate([("A", "1", 0), ("A", "1", 1), ("B", "3", 0)]):
        phase = phase_culture((64, 80), seed=i)[0]
        images[(r, c, f)] = np.stack([phase, (phase[::-1] // 2).astype(phase.dtype)])
    root = tmp_path / "plate.zarr"
    _hcs_plate(root, images)
    plate = discover_plate(root)
    assert plate.layout == "ome-zarr" and plate.wells == ["A01", "B03"]
    assert [f.key for f in plate.fields] == ["A01_f1", "A01_f2", "B03_f1"]
    assert plate.channels == ["dapi", "phase"]
    assert plate.fields[1].channel_plane("dapi") == 1 and plate.fields[1].stem == "A01_f2"

    out = tmp_path / "results"
    assert _run(root, "--out", out, "--channel", "phase", "--table") == 0
    tifs = tmp_path / "tifs"
    tifs.mkdir()
    for (r, c, f), data in images.items():
        tifffile.imwrite(tifs / f"{r}0{c}_s{f + 1}.tif", data[0])
    ref = tmp_path / "ref"
    assert _run(tifs, "--out", ref) == 0
    for key, name in (("A01_f1", "A01_s1"), ("A01_f2", "A01_s2"), ("B03_f1", "B03_s1")):
        np.testing.assert_array_equal(
            tifffile.imread(out / f"{key}_cell.tif"), tifffile.imread(ref / f"{name}_cell.tif")
        )
    with open(out / "wells.csv") as f:
        assert "A01" in f.read()
    assert main(["segment", str(root), "--out", str(tmp_path / "x"), "--channel", "gfp"]) == 2


def test_a_plate_field_and_an_image_with_the_same_name_are_refused(tiny_bundle, tmp_path):
    """An OME-Zarr plate's field A01_f1 and an image A01_f1.tif in one run would write the
    same masks: refused before anything is written."""
    pytest.importorskip("ome_zarr")
    import numpy as np

    phase = phase_culture((64, 80), seed=0)[0]
    _hcs_plate(tmp_path / "plate.zarr", {("A", "1", 0): np.stack([phase, phase])})
    tifffile.imwrite(tmp_path / "A01_f1.tif", phase)
    out = tmp_path / "out"
    args = [tmp_path / "plate.zarr", tmp_path / "A01_f1.tif", "--out", out]
    assert _run(*args) == 2
    assert not any(p for p in out.iterdir() if not p.name.startswith("."))
