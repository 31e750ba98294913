"""The GPU path without a GPU: batches sized by free memory, out-of-memory fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec
from napari_cultureseg.core.bundles import Bundle
from napari_cultureseg.core.device import (
    MAX_BATCH,
    TileTooLarge,
    batch_for,
    is_out_of_memory,
    resilient,
)
from napari_cultureseg.core.model_input import to_model_input
from napari_cultureseg.core.segment import predict
from napari_cultureseg.core.tiling import run_to_end

torch = pytest.importorskip("torch")


class FakeGPU:
    """A device with ``free`` bytes: a tile batch needing more raises torch's OOM error."""

    def __init__(self, free: int, per_pixel: int = 512):
        self.free, self.per_pixel, self.emptied, self.calls = free, per_pixel, 0, []

    def mem_get_info(self):
        return self.free, 2 * self.free

    def empty_cache(self):
        self.emptied += 1

    def wrap(self, predictor):
        def run(batch):
            self.calls.append(batch.shape)
            if batch.shape[0] * batch.shape[-1] * batch.shape[-2] * self.per_pixel > self.free:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return predictor(batch)

        return run


def test_batch_size_follows_the_free_memory():
    assert batch_for("cpu", 512, backend=FakeGPU(10**12)) == 1, "the CPU takes one tile"
    assert batch_for("cuda", 512, backend=FakeGPU(8 * 2**30)) == MAX_BATCH
    assert batch_for("cuda:1", 512, backend=FakeGPU(600 * 2**20)) == 2  # half of 600 MB / 128 MB
    assert batch_for("cuda", 512, backend=FakeGPU(10 * 2**20)) == 1, "never below one"
    assert batch_for("mps", 512, backend=FakeGPU(600 * 2**20)) == 1  # float32: 256 MB a tile

    class Mute:
        def mem_get_info(self):
            raise RuntimeError("driver cannot say")

    assert batch_for("cuda", 512, backend=Mute()) == 1


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
    # superqt drops `finished` after a RuntimeError: what escapes must not be one
    assert isinstance(TileTooLarge(512, "cuda"), MemoryError)
    assert not isinstance(TileTooLarge(512, "cuda"), RuntimeError)


def test_a_batch_that_does_not_fit_is_predicted_in_halves_and_the_size_is_kept():
    gpu = FakeGPU(free=2 * 32 * 32 * 512)  # two 32² tiles fit
    told = []
    run = resilient(gpu.wrap(lambda b: b * 2), "cuda", backend=gpu, on_retry=told.append)
    batch = np.arange(5 * 32 * 32, dtype=np.float32).reshape(5, 1, 32, 32)
    np.testing.assert_array_equal(run(batch), batch * 2)
    assert gpu.emptied >= 1 and told and "ran out of memory with 5 tiles" in told[0]
    gpu.calls.clear()
    np.testing.assert_array_equal(run(batch), batch * 2)
    assert max(s[0] for s in gpu.calls) <= 2, "the batch size that worked is kept"
    with pytest.raises(TileTooLarge, match="64² tile"):
        run(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="not memory"):
        resilient(lambda b: (_ for _ in ()).throw(ValueError("not memory")), "cuda")(batch)


def test_a_tile_too_large_for_the_device_falls_back_to_smaller_tiles_and_says_so():
    cfg = BundleConfig(
        name="t",
        architecture="unet",
        classes=(ClassSpec("cell"),),
        params={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        tile=128,
        overlap=0.25,
    )
    bundle = Bundle(cfg)
    rng = np.random.default_rng(0)
    x = to_model_input(rng.random((200, 230)).astype(np.float32), cfg.input)
    gpu = FakeGPU(free=64 * 64 * 512)  # one 64² tile fits, a 128² tile does not
    notes: list[str] = []
    run = resilient(gpu.wrap(bundle.predictor("cpu")), "cuda", backend=gpu, on_retry=notes.append)
    gen = predict(x, run, cfg, batch_size=4, fit=False, notes=notes)
    seen = []
    with pytest.warns(RuntimeWarning, match="segmenting again with 64² tiles"):
        while True:
            try:
                seen.append(next(gen))
            except StopIteration as stop:
                probs, _ = stop.value
                break
    assert seen and all("64² tiles" in p.note for p in seen), "the progress says so"
    direct, _ = run_to_end(predict(x, bundle.predictor("cpu"), cfg, tile=64, fit=False))
    np.testing.assert_allclose(probs, direct, atol=1e-6)

    tiny = FakeGPU(free=16 * 16 * 512)  # not even the smallest tile fits
    run = resilient(tiny.wrap(bundle.predictor("cpu")), "cuda", backend=tiny)
    with pytest.raises(TileTooLarge):
        run_to_end(predict(x, run, cfg, batch_size=1, fit=False))
