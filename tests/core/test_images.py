import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_cultureseg.core.images import ImageError, as_plane, read_image
from napari_cultureseg.core.model_input import InputSpec, Normalisation, normalise, to_model_input

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 255, (40, 50), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65535, (40, 50), dtype=np.uint16)
RGB8 = RNG.integers(0, 255, (40, 50, 3), dtype=np.uint8)
RGBA8 = RNG.integers(0, 255, (40, 50, 4), dtype=np.uint8)
FLOAT = RNG.random((40, 50)).astype(np.float32)


@pytest.mark.parametrize(
    "name, data",
    [
        ("g8.tif", GRAY8),
        ("g16.tif", GRAY16),
        ("rgb.tif", RGB8),
        ("f.tif", FLOAT),
        ("g8.png", GRAY8),
        ("g16.png", GRAY16),
        ("rgb.png", RGB8),
        ("rgba.png", RGBA8),
    ],
)
def test_lossless_formats_read_back_exactly(tmp_path, name, data):
    path = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(path, data, photometric="rgb" if data.ndim == 3 else None)
    else:
        iio.imwrite(path, data)
    out = read_image(path)
    assert out.dtype == data.dtype
    np.testing.assert_array_equal(out, data)


def test_jpeg_reads_gray_and_rgb(tmp_path):
    yy, xx = np.mgrid[0:40, 0:50]
    smooth = (yy * 3 + xx * 2).astype(np.uint8)  # JPEG is lossy: compare on smooth content
    for data in (smooth, np.stack([smooth, 255 - smooth, smooth // 2], -1)):
        path = tmp_path / f"x{data.ndim}.jpg"
        iio.imwrite(path, data, quality=95)
        out = read_image(path)
        assert out.shape == data.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - data).mean() < 3


def test_ome_tiff_with_channel_first_rgb(tmp_path):
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, np.moveaxis(RGB8, -1, 0), metadata={"axes": "CYX"}, ome=True)
    np.testing.assert_array_equal(read_image(path), RGB8)


def test_ome_tiff_single_plane_with_singleton_axes(tmp_path):
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, GRAY16[None, None, None], metadata={"axes": "TCZYX"}, ome=True)
    np.testing.assert_array_equal(read_image(path), GRAY16)


def test_multipage_tiff_needs_an_explicit_plane(tmp_path):
    stack = np.stack([GRAY8, GRAY8 + 1, GRAY8 + 2])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    with pytest.raises(ImageError, match="stack of 3 planes.*--plane"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, plane=2), GRAY8 + 2)
    with pytest.raises(ImageError, match="plane 5 does not exist"):
        read_image(path, plane=5)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((1, 1)), "too small"),
        (np.zeros((0, 10)), "too small"),
        (np.zeros((5,)), "expected a 2-D image"),
        (np.zeros((4, 5, 6, 7, 8)), "3 stack axes"),
        (np.full((20, 20), np.nan), "NaN"),
        (np.zeros((20, 20), dtype=complex), "not an image"),
    ],
)
def test_not_an_image_is_refused_with_advice(data, message):
    with pytest.raises(ImageError, match=message):
        as_plane(data)


def test_unreadable_files_are_refused(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="could not be read.*corrupt"):
        read_image(text)
    truncated = tmp_path / "cut.png"
    iio.imwrite(truncated, GRAY8)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ImageError, match="could not be read"):
        read_image(truncated)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")
    other = tmp_path / "x.bmp"
    other.write_bytes(b"BM")
    with pytest.raises(ImageError, match="unsupported file type"):
        read_image(other)


def test_percentile_normalisation_maps_percentiles_to_0_and_1():
    x = np.arange(10000, dtype=np.float32).reshape(1, 100, 100)
    out = normalise(x, Normalisation(low=1, high=99))
    lo, hi = np.percentile(x, [1, 99])
    assert out[0].flat[int(round(lo))] == pytest.approx(0, abs=1e-3)
    assert out[0].flat[int(round(hi))] == pytest.approx(1, abs=1e-3)
    assert normalise(np.full((1, 10, 10), 7.0)).max() == 0  # flat image: zeros, not NaN


def test_model_input_channels_and_nan_handling():
    x = to_model_input(RGB8, InputSpec(channels=1))
    assert x.shape == (1, 40, 50) and x.dtype == np.float32
    x3 = to_model_input(GRAY16, InputSpec(channels=3))
    assert x3.shape == (3, 40, 50)
    np.testing.assert_array_equal(x3[0], x3[2])
    rgba = to_model_input(RGBA8, InputSpec(channels=3))
    np.testing.assert_array_equal(rgba, to_model_input(RGB8_of(RGBA8), InputSpec(channels=3)))
    holes = FLOAT.copy()
    holes[3:6, 3:6] = np.nan
    assert np.isfinite(to_model_input(holes)).all()


def RGB8_of(rgba):
    return np.ascontiguousarray(rgba[..., :3])


def test_gray_conversion_of_8_and_16_bit_is_scale_free():
    a = to_model_input(GRAY8)
    b = to_model_input(GRAY8.astype(np.uint16) * 257)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_median_and_histogram_matching_options():
    spec = InputSpec(median3=True, histogram_reference=tuple(np.linspace(0, 1, 11)))
    x = to_model_input(GRAY8, spec)
    assert x.shape == (1, 40, 50)
    # after matching, the image's quantiles follow the reference
    np.testing.assert_allclose(np.quantile(x, [0, 0.5, 1]), [0, 0.5, 1], atol=0.05)
    spec2 = InputSpec.from_dict(spec.to_dict())
    assert spec2 == spec


def test_a_channels_last_stack_is_a_stack_of_its_channels():
    a = np.zeros((256, 256, 16), np.uint16)
    a[..., 3] = 7
    with pytest.raises(ImageError, match="16 planes"):
        as_plane(a)
    p = as_plane(a, plane=3)
    assert p.shape == (256, 256) and p.max() == 7


def test_floats_beyond_float32_are_scaled_not_emptied():
    rng = np.random.default_rng(0)
    b = rng.random((64, 64)) * 1e300
    b[10:20, 10:20] = 5e300
    x = to_model_input(b)
    assert np.isfinite(x).all() and x[0, 15, 15] > 0.9 and x.std() > 0.05


def test_an_image_too_big_for_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from napari_cultureseg.core import images

    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, np.zeros((2000, 3000), np.uint16), compression="zlib")
    monkeypatch.setattr(images, "available_memory", lambda: 50 * 2**20)  # 50 MiB left

    def no_read(*a, **k):
        raise AssertionError("the pixels were read")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", no_read)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_read)
    with pytest.raises(ImageError, match=r"2000 x 3000 .*GiB.*Crop it.*block by block"):
        images.read_image(path)
    monkeypatch.setattr(images, "available_memory", lambda: 8 * 2**30)
    monkeypatch.undo()
    assert images.read_image(path).shape == (2000, 3000)


def test_normalise_makes_no_float64_copy_of_the_image():
    import tracemalloc

    x = np.random.default_rng(0).random((1, 2000, 2000), dtype=np.float32)
    tracemalloc.start()
    y = normalise(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert y.dtype == np.float32 and peak < 1.5 * x.nbytes
