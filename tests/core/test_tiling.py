import numpy as np
import pytest

from napari_cultureseg.core.tiling import (
    Progress,
    gaussian_weight,
    predict_tiled,
    run_to_end,
    tile_starts,
)


def plus_one(batch):
    return batch + 1.0


@pytest.mark.parametrize("shape", [(1, 301, 451), (3, 257, 129), (1, 128, 128), (2, 1000, 77)])
def test_plus_one_is_exact_on_odd_shapes(shape):
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = run_to_end(predict_tiled(img, plus_one, tile=128, overlap=0.25, batch_size=3))
    assert out.shape == shape
    np.testing.assert_allclose(out, img + 1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(1, 20, 37), (1, 9, 9), (1, 60, 300)])
def test_image_smaller_than_tile_is_padded_and_cropped_back(shape):
    img = np.random.default_rng(1).random(shape, dtype=np.float32)
    seen = []

    def record(batch):
        seen.append(batch.shape)
        return batch + 1.0

    out = run_to_end(predict_tiled(img, record, tile=64, overlap=0.5))
    assert out.shape == shape
    np.testing.assert_allclose(out, img + 1, atol=1e-5, rtol=0)
    assert all(s[-2:] == (64, 64) for s in seen)


def test_last_tile_is_flush_and_no_tile_leaves_the_image():
    assert tile_starts(1000, 256, 0.25) == [0, 192, 384, 576, 744]
    assert tile_starts(256, 256, 0.25) == [0]
    assert tile_starts(100, 256, 0.25) == [0]
    for size in (257, 511, 1022, 1393):
        starts = tile_starts(size, 256, 0.3)
        assert starts[-1] == size - 256 and starts[0] == 0
        assert all(b - a <= 256 for a, b in zip(starts, starts[1:], strict=False))


def test_progress_after_every_batch_and_output_channels():
    img = np.zeros((1, 300, 300), np.float32)
    gen = predict_tiled(
        img, lambda b: np.repeat(b, 3, axis=1), tile=128, overlap=0.25, batch_size=2
    )
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            out = stop.value
            break
    total = reports[0].total
    assert total == len(tile_starts(300, 128, 0.25)) ** 2 == 9
    assert [r.done for r in reports] == [2, 4, 6, 8, 9]
    assert all(isinstance(r, Progress) for r in reports) and reports[-1].fraction == 1.0
    assert out.shape == (3, 300, 300)


def test_closing_the_generator_stops_prediction():
    calls = []
    gen = predict_tiled(
        np.zeros((1, 512, 512), np.float32),
        lambda b: calls.append(1) or b,
        tile=128,
        overlap=0.5,
        batch_size=1,
    )
    next(gen)
    next(gen)
    gen.close()
    assert len(calls) == 2


def test_weights_are_smooth_and_never_zero():
    w = gaussian_weight(128)
    assert w.min() > 0 and w.max() == pytest.approx(1.0)
    assert w[64, 64] > w[64, 100] > w[64, 127]


def test_seams_blend_away_a_position_dependent_predictor():
    # a predictor whose output depends on the position inside the tile: blending must
    # give a smooth result, with no jump at tile borders larger than the local variation
    ramp = np.linspace(0, 1, 128, dtype=np.float32)

    def biased(b):
        return b + 0.01 * ramp[None, None, None, :]

    img = np.ones((1, 128, 600), np.float32)
    out = run_to_end(predict_tiled(img, biased, tile=128, overlap=0.5))[0, 64]
    assert np.abs(np.diff(out)).max() < 1e-3


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="overlap"):
        run_to_end(predict_tiled(np.zeros((1, 64, 64), np.float32), plus_one, overlap=1.0))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        run_to_end(predict_tiled(np.zeros((64, 64), np.float32), plus_one))
    with pytest.raises(ValueError, match="keep the batch size"):
        run_to_end(predict_tiled(np.zeros((1, 64, 64), np.float32), lambda b: b[:, :, :8], tile=64))


def test_aligned_tiles_start_on_the_stride_grid_and_stay_exact():
    img = np.random.default_rng(2).random((1, 1022, 777), dtype=np.float32)
    starts = []

    def record(batch):
        return batch + 1.0

    gen = predict_tiled(img, record, tile=256, overlap=0.3, align=32)
    out = run_to_end(gen)
    np.testing.assert_allclose(out, img + 1, atol=1e-5, rtol=0)
    assert out.shape == img.shape
    for size in (1024, 800):  # sizes after padding 1022 and 777 up to multiples of 32
        starts = tile_starts(size, 256, 0.3, align=32)
        assert all(s % 32 == 0 for s in starts) and starts[-1] == size - 256
    with pytest.raises(ValueError, match="multiple of the model's stride"):
        run_to_end(predict_tiled(img, record, tile=250, align=32))


def test_alignment_makes_a_strided_predictor_shift_consistent():
    # a predictor that only sees its input through a stride-4 grid (like a strided CNN):
    # unaligned tiles sample a shifted grid and disagree with the whole image; aligned ones do not
    def strided(batch):
        coarse = batch[:, :, ::4, ::4]
        return np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)

    img = np.random.default_rng(3).random((1, 130, 130), dtype=np.float32)
    padded = np.pad(img, ((0, 0), (0, 2), (0, 2)), mode="reflect")  # 132: a multiple of 4
    whole = strided(padded[None])[0][:, :130, :130]
    aligned = run_to_end(predict_tiled(img, strided, tile=64, overlap=0.25, align=4))
    unaligned = run_to_end(predict_tiled(img, strided, tile=64, overlap=0.25))
    np.testing.assert_allclose(aligned, whole, atol=1e-6)
    assert np.abs(unaligned - whole).max() > 0.1


def test_fit_tile_needs_fewer_pixels_at_the_same_pixel_overlap():
    from napari_cultureseg.core.tiling import fit_tile

    # 1024 in 512 tiles, 128 px overlap: starts 0, 384, 512 (3 a side, 2.36 M pixels);
    # 576 tiles with 128 px overlap: step 448, starts 0, 448 (2 a side, 1.33 M pixels)
    assert tile_starts(1024, 512, 0.25, 32) == [0, 384, 512]
    tile, overlap = fit_tile((1024, 1024), 512, 0.25, align=32)
    assert (tile, tile * overlap) == (576, 128)
    assert tile_starts(1024, tile, overlap, 32) == [0, 448]
    # never beyond 25 % larger, and no change where the given tile is already best
    assert fit_tile((5000, 7000), 512, 0.25, align=32)[0] <= 640
    assert fit_tile((512, 512), 512, 0.25, align=32) == (512, 0.25)
    assert fit_tile((200, 300), 512, 0.25, align=32) == (512, 0.25)


def test_grown_tiles_blend_exactly():
    from napari_cultureseg.core.tiling import fit_tile

    # the blend of grown tiles is still exact for a pixelwise predictor
    img = np.random.default_rng(3).random((1, 1024, 1024), dtype=np.float32)
    tile, overlap = fit_tile(img.shape[1:], 512, 0.25, align=32)
    gen = predict_tiled(img, plus_one, tile=tile, overlap=overlap, align=32)
    totals = set()
    try:
        while True:
            totals.add(next(gen).total)
    except StopIteration as stop:
        out = stop.value
    assert totals == {4}
    np.testing.assert_allclose(out, img + 1, atol=1e-5, rtol=0)
