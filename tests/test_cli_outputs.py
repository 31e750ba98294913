"""The CLI never overwrites what the user did not ask it to, and never writes outside --out."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile

from napari_cultureseg.cli import main
from napari_cultureseg.cli.paths import output_stems
from napari_cultureseg.core.synth import phase_culture


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _image(seed=0, shape=(64, 80)):
    return phase_culture(shape, seed=seed)[0]


def _run(*args):
    return main(["segment", *map(str, args), "--model", "tiny", "--quiet", "--diameter", "none"])


def test_existing_outputs_are_refused_unless_overwrite(tiny_bundle, tmp_path, capsys):
    src = tmp_path / "plate"
    src.mkdir()
    tifffile.imwrite(src / "X.tif", _image())
    truth = np.zeros((64, 80), np.uint8)
    truth[10:20, 10:20] = 1
    tifffile.imwrite(src / "X_cell.tif", truth)  # the user's ground truth beside the image
    before = _md5(src / "X_cell.tif")
    # into the same folder: the mask is not an input, and X_cell.tif is not overwritten
    assert _run(src, "--out", src) == 2
    err = capsys.readouterr().err
    assert "exist already" in err and "--overwrite" in err
    assert _md5(src / "X_cell.tif") == before
    assert sorted(p.name for p in src.iterdir()) == ["X.tif", "X_cell.tif"]  # nothing written
    # elsewhere: written; a second run refuses, --overwrite replaces
    out = tmp_path / "out"
    assert _run(src, "--out", out) == 0
    assert (out / "X_cell.tif").is_file() and not (out / "X_cell_cell.tif").exists()
    stamp = _md5(out / "X_cell.tif")
    assert _run(src, "--out", out) == 2 and _md5(out / "X_cell.tif") == stamp
    assert _run(src, "--out", out, "--overwrite") == 0


def test_a_second_run_does_not_segment_its_own_outputs(tiny_bundle, tmp_path):
    src = tmp_path / "plate"
    src.mkdir()
    tifffile.imwrite(src / "A01.tif", _image())
    assert _run(src, "--out", src) == 0
    written = json.loads((src / ".cultureseg-outputs.json").read_text())["files"]
    assert "A01_cell.tif" in written and "A01_cell_instances.tif" in written
    assert _run(src, "--out", src, "--overwrite") == 0
    names = sorted(p.name for p in src.iterdir() if not p.name.startswith("."))
    assert names == ["A01.tif", "A01_cell.tif", "A01_cell_instances.tif", "A01_debris.tif"]


def test_inputs_with_the_same_stem_do_not_collide(tiny_bundle, tmp_path):
    import imageio.v3 as iio

    tifffile.imwrite(tmp_path / "a.tif", _image(0))
    iio.imwrite(tmp_path / "a.png", (_image(1) >> 8).astype(np.uint8))
    out = tmp_path / "out"
    assert _run(tmp_path / "a.tif", tmp_path / "a.png", "--out", out) == 0
    tif = tifffile.imread(out / "a_tif_cell.tif")
    png = tifffile.imread(out / "a_png_cell.tif")
    assert tif.shape == png.shape == (64, 80)
    assert not (out / "a_cell.tif").exists()


def test_output_stems_are_distinct_even_across_folders(tmp_path):
    from pathlib import Path

    paths = [Path("d1/a.tif"), Path("d2/a.tif"), Path("d1/a.png"), Path("d1/b_image.tif")]
    stems = output_stems(paths)
    assert len(set(stems.values())) == 4
    assert stems[Path("d1/b_image.tif")] == "b"


def test_a_strangers_class_name_cannot_write_outside_out(tiny_bundle, tmp_path, capsys):
    from napari_cultureseg.core.bundles import user_models_dir

    cfg = user_models_dir() / "tiny" / "config.json"
    d = json.loads(cfg.read_text())
    d["classes"][1]["name"] = "x/../../evil"
    cfg.write_text(json.dumps(d))
    tifffile.imwrite(tmp_path / "a.tif", _image())
    out = tmp_path / "deep" / "out"
    assert _run(tmp_path / "a.tif", "--out", out) == 2
    assert "class name" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*evil*"))


def test_a_recipe_name_with_a_path_is_refused(tmp_path):
    import yaml

    from napari_cultureseg.core.training import model_config

    y = {"name": "../x", "classes": [{"name": "cell"}]}
    with pytest.raises(ValueError, match="model name"):
        model_config(y)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(y))


def test_a_fine_tune_job_refuses_a_model_name_with_a_path(tiny_bundle):
    from napari_cultureseg.core.datasets import Sample
    from napari_cultureseg.core.versions import fine_tune_job, finetune_config

    x = np.zeros((1, 64, 64), np.float32)
    t = np.zeros((2, 64, 64), np.uint8)
    s = Sample("s", x, t, np.ones_like(t, bool))
    with pytest.raises(ValueError, match="model version name"):
        next(fine_tune_job(tiny_bundle, "../../x", [s], finetune_config(steps=1)))


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_unusable_out_is_a_clear_error_before_any_work(tiny_bundle, tmp_path, capsys, where):
    tifffile.imwrite(tmp_path / "a.tif", _image())
    f = tmp_path / "f.txt"
    f.write_text("x")
    out = f if where == "file" else f / "sub"
    assert _run(tmp_path / "a.tif", "--out", out) == 2
    assert "--out" in capsys.readouterr().err


def test_one_bad_file_name_fails_alone(tiny_bundle, tmp_path, capsys):
    long = tmp_path / ("L" * 240 + ".tif")
    tifffile.imwrite(long, _image())
    tifffile.imwrite(tmp_path / "ok.tif", _image(2))
    out = tmp_path / "out"
    assert _run(long, tmp_path / "ok.tif", "--out", out) == 1
    err = capsys.readouterr().err
    assert "LLLL" in err and "1 of 2" in err
    assert (out / "ok_cell.tif").is_file()


def test_tables_count_the_objects_written_per_well(tiny_bundle, tmp_path, capsys):
    import csv

    src = tmp_path / "plate"
    src.mkdir()
    for name, seed in (("A01_s1", 0), ("A01_s2", 1), ("C07_s1", 2)):
        tifffile.imwrite(src / f"{name}.tif", _image(seed))
    out = tmp_path / "out"
    assert _run(src, "--out", out, "--table") == 0
    with open(out / "objects.csv") as f:
        objects = list(csv.DictReader(f))
    with open(out / "wells.csv") as f:
        wells = {r["well"]: r for r in csv.DictReader(f)}
    for stem in ("A01_s1", "A01_s2", "C07_s1"):
        labels = tifffile.imread(out / f"{stem}_cell_instances.tif")
        rows = [r for r in objects if r["image"] == stem]
        assert len(rows) == labels.max()  # one row per object written
        assert sorted(int(r["area"]) for r in rows) == sorted(np.bincount(labels.ravel())[1:])
        assert {r["class"] for r in rows} <= {"cell"}  # debris is not counted
        assert all("in_debris" in r for r in rows)
    n_a01 = sum(1 for r in objects if r["well"] == "A01")
    assert list(wells) == ["A01", "C07"] and int(wells["A01"]["cell_count"]) == n_a01
    assert wells["A01"]["fields"] == "2"
    masks = [tifffile.imread(out / f"A01_s{i}_cell.tif") for i in (1, 2)]
    pct = 100 * sum(int(m.sum()) for m in masks) / sum(m.size for m in masks)
    assert float(wells["A01"]["cell_area_pct"]) == pytest.approx(pct, abs=0.01)
    # the tables are outputs too: refused when only they would be overwritten
    for p in out.glob("*.tif"):
        p.unlink()
    capsys.readouterr()
    assert _run(src, "--out", out, "--table") == 2
    assert "objects.csv" in capsys.readouterr().err
