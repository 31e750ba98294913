import subprocess
import sys

import numpy as np
import tifffile

from napari_cultureseg.cli import main
from napari_cultureseg.core.synth import phase_culture


def test_models_lists_classes(tiny_bundle, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "cell (+instances)" in out and "debris" in out


def test_segment_writes_one_mask_per_class_with_the_image_shape(tiny_bundle, tmp_path):
    img, _ = phase_culture((200, 300), seed=0)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "well_A1.tif", img)
    tifffile.imwrite(src / "well_A2.tif", img[:150, :170])
    out = tmp_path / "out"
    assert (
        main(["segment", str(src), "--model", "tiny", "--out", str(out), "--prob", "--quiet"]) == 0
    )
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == sorted(
        f"well_{w}_{f}.tif"
        for w in ("A1", "A2")
        for f in ("cell", "debris", "cell_instances", "cell_prob", "debris_prob")
    )
    for w, shape in (("A1", (200, 300)), ("A2", (150, 170))):
        mask = tifffile.imread(out / f"well_{w}_cell.tif")
        inst = tifffile.imread(out / f"well_{w}_cell_instances.tif")
        prob = tifffile.imread(out / f"well_{w}_cell_prob.tif")
        assert mask.shape == inst.shape == prob.shape == shape
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert inst.dtype == np.uint16 and ((inst > 0) == (mask > 0)).all()
        assert prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1


def test_segment_reports_bad_files_and_goes_on(tiny_bundle, tmp_path, capsys):
    (tmp_path / "broken.tif").write_text("not a tiff")
    good = tmp_path / "good.png"
    import imageio.v3 as iio

    iio.imwrite(good, phase_culture((64, 64), seed=1, bit_depth=8)[0])
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(tmp_path / "broken.tif"),
            str(good),
            "--model",
            "tiny",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 1
    assert "broken.tif" in capsys.readouterr().err
    assert (out / "good_cell.tif").exists()


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    assert main(["segment", "x.tif", "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err


def test_console_script_runs_the_default_model_on_real_data(shared_data, tmp_path):
    """`cultureseg segment` on a real Usiigaci image with the bundled default model."""
    from napari_cultureseg.core import metrics
    from napari_cultureseg.core.bundles import load_bundle

    assert "set02" in load_bundle("phase-cells").config.card["test_ids"]  # seen by no choice
    image = shared_data / "phase_usiigaci" / "set02_image.tif"
    out = tmp_path / "out"
    exe = [sys.executable, "-m", "napari_cultureseg.cli"]
    r = subprocess.run(
        [*exe, "segment", str(image), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    truth = tifffile.imread(shared_data / "phase_usiigaci" / "set02_cell.tif")
    mask = tifffile.imread(out / "set02_cell.tif")
    assert mask.shape == truth.shape == (1022, 1024)
    assert metrics.dice(mask > 0, truth > 0) > 0.8  # the trained model, not a placeholder
    inst = tifffile.imread(out / "set02_cell_instances.tif")
    assert inst.max() > 0.5 * len(np.unique(truth[truth > 0]))


def test_segment_splitting_cuts_the_objects_as_asked(culture_sample, tmp_path, capsys):
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    tifffile.imwrite(tmp_path / "w.tif", culture_sample)
    args = ["segment", str(tmp_path / "w.tif"), "--model", "phase-cells", "--quiet"]
    args += ["--diameter", "40"]  # the model's own cell size: zoom 1
    seg = run_to_end(segment(load_bundle("phase-cells"), culture_sample))
    counts = set()
    for level in (0.5, 0.7):
        out = tmp_path / f"out{level}"
        assert main([*args, "--out", str(out), "--splitting", f"cell={level}"]) == 0
        got = tifffile.imread(out / "w_cell_instances.tif")
        mask = tifffile.imread(out / "w_cell.tif")
        np.testing.assert_array_equal(mask > 0, seg.mask("cell"))  # the mask is the model's
        np.testing.assert_array_equal(got, seg.with_seeds({"cell": level}).instances("cell"))
        counts.add(int(got.max()))
    assert len(counts) == 2
    # a class it does not apply to, no level, a level out of range: refused, nothing written
    for bad, said in (
        ("nucleus=0.5", "splitting applies to cell"),
        ("cell", "CLASS=LEVEL"),
        ("cell=1.5", "between 0 and 1"),
    ):
        out = tmp_path / "refused"
        assert main([*args, "--out", str(out), "--splitting", bad]) == 2
        assert said in capsys.readouterr().err and not out.exists()
