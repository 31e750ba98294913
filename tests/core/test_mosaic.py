"""Whole-well mosaics segmented block by block (core/mosaic.py, `cultureseg segment --block`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_cultureseg.core.images import ImageError
from napari_cultureseg.core.mosaic import (
    lazy_plane,
    mosaic_levels,
    segment_mosaic,
    write_tiled_tif,
)
from napari_cultureseg.core.mosaic_grid import blocks, grid_windows, mosaic_grid


def test_blocks_cover_the_plane_once_with_their_cores():
    shape = (1000, 1300)
    seen = np.zeros(shape, np.int32)
    for (y0, y1, x0, x1), (oy0, oy1, ox0, ox1) in blocks(shape, 384, 100):
        seen[y0:y1, x0:x1] += 1
        assert oy0 == max(0, y0 - 100) and oy1 == min(1000, y1 + 100)
        assert ox0 == max(0, x0 - 100) and ox1 == min(1300, x1 + 100)
    assert (seen == 1).all()


def test_a_tiff_is_read_lazily_and_a_stack_is_refused(tmp_path):
    img = (np.arange(600 * 500) % 251).astype(np.uint8).reshape(600, 500)
    tifffile.imwrite(tmp_path / "m.tif", img, tile=(128, 128))
    z = lazy_plane(tmp_path / "m.tif")
    assert z.shape == (600, 500)
    assert np.array_equal(np.asarray(z[100:300, 250:500]), img[100:300, 250:500])
    tifffile.imwrite(tmp_path / "one.tif", img[None])  # a singleton axis is indexed away
    assert np.array_equal(np.asarray(lazy_plane(tmp_path / "one.tif")[5:9, 7:11]), img[5:9, 7:11])
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([img, img, img, img, img]))
    with pytest.raises(ImageError, match="one 2-D plane"):
        lazy_plane(tmp_path / "stack.tif")


def test_tiled_tif_round_trips(tmp_path):
    import zarr

    data = (np.arange(700 * 650, dtype=np.uint32) * 7919) % 100003
    data = data.reshape(700, 650)
    z = zarr.open_array(
        store=str(tmp_path / "a.zarr"),
        mode="w",
        shape=data.shape,
        chunks=(256, 256),
        dtype="uint32",
    )
    z[:] = data
    write_tiled_tif(tmp_path / "a.tif", z, tile=256)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.pages[0].is_tiled
        assert np.array_equal(tif.asarray(), data)


def test_block_by_block_gives_the_whole_image_bit_for_bit(shared_data, tmp_path):
    """The shipped phase model on a real, dense field cut into 3 × 3 blocks at a zoom of
    about 0.9: masks and objects exactly those of the field segmented in one piece with
    the same tiles, zoom and levels (seams run through cells)."""
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.images import read_image
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    bundle = load_bundle("phase-cells")
    grid = mosaic_grid(bundle, 0.9, 256)
    assert (grid.p, grid.q) == (64, 71) and grid.step_px == 213  # whole pixels
    img = read_image(shared_data / "phase_usiigaci" / "set14_image.tif")
    side = 1022 - 1022 % grid.q
    img = img[:side, :side]
    tifffile.imwrite(tmp_path / "field.tif", img, tile=(256, 256))
    source = lazy_plane(tmp_path / "field.tif")
    windows = grid_windows((side, side), 384, grid)
    assert len(windows) == 9 and any(o[1] < side for _, o in windows)  # real seams
    result = segment_mosaic(
        bundle, source, tmp_path / "work", zoom=0.9, block=384, tile=256, device="cpu"
    )
    levels = mosaic_levels(source, bundle.config.input, grid.zoom, 384)
    seg = run_to_end(
        segment(bundle, img, device="cpu", zoom=grid.zoom, levels=levels, tile=256, fit=False)
    )
    mask = seg.masks()["cell"]
    labels = seg.instances("cell", mask)
    assert np.array_equal(np.asarray(result.masks["cell"][:]) > 0, mask)
    objects = np.asarray(result.objects["cell"][:])
    assert result.counts["cell"] == labels.max() > 50
    # the same objects, pixel for pixel (labels are numbered in another order)
    pairs = np.unique(np.stack([labels.ravel(), objects.ravel()]), axis=1)
    assert pairs.shape[1] == labels.max() + 1  # a one-to-one map, background to background
    assert (pairs[0] == 0).sum() == 1 and (pairs[1] == 0).sum() == 1


def test_the_tile_grid_puts_tiles_on_whole_pixels_and_covers_every_core():
    """Every block holds each tile of the whole plane that touches its core, on the same
    grid, and nothing else that could reach the core."""
    from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec, ScaleSpec
    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.tiling import tile_starts

    cfg = BundleConfig(
        name="g",
        architecture="unet",
        classes=(ClassSpec("cell"),),
        tile=512,
        overlap=0.25,
        scale=ScaleSpec(diameter=40),
    )
    for zoom in (0.3, 0.55, 0.9, 1.0, 1.37, 2.5):
        g = mosaic_grid(Bundle(cfg), zoom)
        assert abs(g.zoom / zoom - 1) <= zoom / 256  # 1 / (2q) at p = 128
        assert g.step * g.q % g.p == 0 and g.tile * g.q % g.p == 0
        n = 7 * g.step_px + 3 * g.q
        starts = tile_starts(_padded(n * g.p // g.q), g.tile, g.overlap, 32)
        cover = np.zeros(n, np.int32)
        for (c0, c1, _, _), (o0, o1, _, _) in grid_windows((n, 8), 900, g):
            cover[c0:c1] += 1
            assert c0 - o0 >= min(c0, g.context) and o1 - c1 >= min(n - c1, g.context)
            for s in starts:  # net pixels; a tile touching the core lies in the window
                a, b = s * g.q / g.p, min(n, (s + g.tile) * g.q / g.p)  # padding: no pixel
                if a < c1 and b > c0:
                    assert o0 <= a and b <= o1, (zoom, s, (c0, c1, o0, o1))
            local = tile_starts(_padded((o1 - o0) * g.p // g.q), g.tile, g.overlap, 32)
            on_grid = {s - o0 * g.p // g.q for s in starts}
            touching = [
                s for s in local if s * g.q / g.p + o0 < c1 and (s + g.tile) * g.q / g.p + o0 > c0
            ]
            assert set(touching) <= on_grid
        assert (cover == 1).all()


def _padded(n: int) -> int:
    """A side of the network's grid as predict_tiled pads it (stride 32, at least a tile)."""
    return max(512, -(-n // 32) * 32)


def test_cli_streams_a_mosaic_to_tiled_tiffs_and_resumes(tiny_bundle, tmp_path):
    from napari_cultureseg.cli import main

    rng = np.random.default_rng(0)
    img = (rng.random((700, 640)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "A01_s1.tif", img, tile=(128, 128))
    out = tmp_path / "out"
    args = [
        "segment",
        str(tmp_path / "A01_s1.tif"),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--block",
        "256",
        "--diameter",
        "none",
        "--device",
        "cpu",
        "--table",
        "--quiet",
    ]
    assert main(args) == 0
    for name in ("A01_s1_cell.tif", "A01_s1_debris.tif", "A01_s1_cell_instances.tif"):
        with tifffile.TiffFile(out / name) as tif:
            assert tif.pages[0].is_tiled and tif.pages[0].shape == (700, 640)
    assert not list(out.glob(".*.blocks*"))  # the zarr scratch space is gone
    record = json.loads((out / ".cultureseg-fields" / "A01_s1.json").read_text())
    assert record["done"] and "block by block" in record["summary"]
    labels = tifffile.imread(out / "A01_s1_cell_instances.tif")
    rows = [r for r in record["rows"] if r["class"] == "cell"]
    assert len(rows) == len(np.unique(labels)) - 1
    assert sorted(r["area"] for r in rows) == sorted(
        np.bincount(labels.ravel())[1:][np.bincount(labels.ravel())[1:] > 0].tolist()
    )
    before = (out / "A01_s1_cell.tif").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0  # finished: nothing is computed again
    assert (out / "A01_s1_cell.tif").stat().st_mtime_ns == before


def test_a_mosaic_refuses_outputs_it_cannot_stream_and_writes_nothing(tiny_bundle, tmp_path):
    from napari_cultureseg.cli import main

    tifffile.imwrite(tmp_path / "m.tif", np.zeros((300, 300), np.uint8))
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(tmp_path / "m.tif"),
            "--out",
            str(out),
            "--model",
            "tiny",
            "--block",
            "128",
            "--prob",
            "--diameter",
            "none",
            "--quiet",
        ]
    )
    assert code != 0
    assert not [p for p in out.glob("*") if not p.name.startswith(".")]


def test_a_mosaic_streams_to_ome_zarr_with_the_masks_of_its_tiffs(tiny_bundle, tmp_path):
    pytest.importorskip("ome_zarr")
    import zarr

    from napari_cultureseg.cli import main
    from napari_cultureseg.core.omezarr import read_labels

    rng = np.random.default_rng(1)
    img = (rng.random((600, 520)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "A01_s1.tif", img, tile=(128, 128))
    common = ["--model", "tiny", "--block", "256", "--diameter", "none", "--device", "cpu"]
    src = str(tmp_path / "A01_s1.tif")
    assert main(["segment", src, "--out", str(tmp_path / "tif"), *common, "--quiet"]) == 0
    args = ["segment", src, "--out", str(tmp_path / "zarr"), *common, "--format", "ome-zarr"]
    assert main([*args, "--quiet"]) == 0
    written = tmp_path / "zarr" / "A01_s1.ome.zarr"
    labels = read_labels(written)
    assert sorted(labels) == ["cell", "cell_instances", "debris"]
    for name, got in labels.items():
        want = tifffile.imread(tmp_path / "tif" / f"A01_s1_{name}.tif")
        np.testing.assert_array_equal(got, want)
    level0 = json.loads((written / ".zattrs").read_text())["multiscales"][0]["datasets"][0]
    np.testing.assert_array_equal(zarr.open_array(str(written / level0["path"]), mode="r")[:], img)
    assert not list((tmp_path / "zarr").glob(".*.blocks*"))
    assert not list((tmp_path / "zarr").glob("*.tif"))


def test_an_ome_zarr_mosaic_is_read_lazily_and_gives_the_masks_of_its_tiff(
    tiny_bundle, tmp_path, monkeypatch
):
    pytest.importorskip("ome_zarr")
    from napari_cultureseg.cli import main
    from napari_cultureseg.core import batch, batch_outputs, mosaic
    from napari_cultureseg.core.omezarr import write_field

    rng = np.random.default_rng(2)
    img = (rng.random((520, 450)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "w2.tif", img, tile=(128, 128))
    write_field(tmp_path / "w.ome.zarr", img, {}, {})
    common = ["--model", "tiny", "--block", "256", "--diameter", "none", "--device", "cpu"]
    for src, out in (("w.ome.zarr", "zarr"), ("w2.tif", "tif")):
        args = ["segment", str(tmp_path / src), "--out", str(tmp_path / out), *common]
        assert main([*args, "--quiet"]) == 0
    # the same pixels as a TIFF and as an OME-Zarr give the same masks; w.ome.zarr -> w_*
    for name in ("cell", "debris", "cell_instances"):
        np.testing.assert_array_equal(
            tifffile.imread(tmp_path / "zarr" / f"w_{name}.tif"),
            tifffile.imread(tmp_path / "tif" / f"w2_{name}.tif"),
        )
    # read on demand (a dask array: a block reads its window only); large ones go by block
    assert type(mosaic.lazy_source(tmp_path / "w.ome.zarr")).__module__.startswith("dask")
    job = batch_outputs.FieldJob(str(tmp_path / "w.ome.zarr"), "w", str(tmp_path), (), "tiny", {})
    assert not batch.is_mosaic(job)  # 520 x 450: in memory
    monkeypatch.setattr(mosaic, "MOSAIC_PIXELS", 1000)
    assert batch.is_mosaic(job)


def test_which_tiffs_go_block_by_block(tmp_path, monkeypatch):
    from napari_cultureseg.core import mosaic
    from napari_cultureseg.core.batch import is_mosaic
    from napari_cultureseg.core.batch_outputs import FieldJob

    tifffile.imwrite(tmp_path / "big.tif", np.zeros((300, 400), np.uint8))
    (tmp_path / "big.png").write_bytes(b"")

    def job(path, **options):
        return FieldJob(str(path), "big", str(tmp_path), (), "tiny", options)

    assert not is_mosaic(job(tmp_path / "big.tif"))  # 120 000 pixels: in memory
    monkeypatch.setattr(mosaic, "MOSAIC_PIXELS", 100_000)
    assert is_mosaic(job(tmp_path / "big.tif"))  # above the limit: block by block
    assert not is_mosaic(job(tmp_path / "big.tif", block=0))  # --block 0: never
    monkeypatch.setattr(mosaic, "MOSAIC_PIXELS", 10**9)
    assert is_mosaic(job(tmp_path / "big.tif", block=256))  # --block N: always
    assert not is_mosaic(job(tmp_path / "big.png", block=256))  # TIFFs only


def test_a_folder_that_holds_something_is_never_used_for_the_blocks(tiny_bundle, tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((200, 200), np.uint8))
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="new or empty"):
        segment_mosaic(tiny_bundle, lazy_plane(tmp_path / "m.tif"), work, zoom=1.0, device="cpu")
    assert (work / "mine.txt").read_text() == "a user's file"


def test_a_mosaic_is_cut_into_objects_at_the_users_splitting(culture_sample, tmp_path):
    from napari_cultureseg.cli import main

    c = culture_sample
    tifffile.imwrite(
        tmp_path / "m.tif", np.block([[c, c[:, ::-1]], [c[::-1], c.T]]), tile=(128, 128)
    )
    args = ["segment", str(tmp_path / "m.tif"), "--model", "phase-cells", "--block", "256"]
    args += ["--diameter", "40", "--device", "cpu", "--quiet"]
    got = {}
    for level in (0.3, 0.8):
        out = tmp_path / f"out{level}"
        assert main([*args, "--out", str(out), "--splitting", f"cell={level}"]) == 0
        got[level] = [tifffile.imread(out / f"m_cell{s}.tif") for s in ("", "_instances")]
    np.testing.assert_array_equal(got[0.3][0], got[0.8][0])  # the same mask ...
    assert got[0.3][1].max() != got[0.8][1].max()  # ... cut into other objects
