"""Where the network runs: the one place that knows CUDA, Apple MPS and the CPU.

Everything that moves arrays to a device, picks a batch size or survives a
device running out of memory goes through here:

- :func:`resolve_device`: ``auto`` → CUDA, then MPS, then the CPU.
- :func:`to_device`: a numpy array (or tensor) onto a device.
- :func:`autocast`: float16 autocast for inference on CUDA, nothing elsewhere.
- :func:`batch_for`: tiles per forward pass from the device's free memory.
- :func:`resilient`: a predictor that, when the device runs out of memory, empties
  its cache and predicts the batch in halves, down to one tile; a single tile that
  does not fit raises :class:`TileTooLarge`, on which :func:`segment.predict` tries
  smaller tiles and says so.

Memory queries go through a *backend* (``mem_get_info()`` → ``(free, total)``
bytes, ``empty_cache()``): :func:`backend_of` gives torch's for a real device;
tests give a fake one, so CI on a CPU runs the GPU logic.

torch is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

PER_PIXEL_BYTES = {"cuda": 512, "mps": 1024}
"""Peak inference memory per tile pixel, a generous bound for the bundled U-Nets
(a resnet18 U-Net's activations in float16 on CUDA; float32 on MPS): 512² tiles
then cost 128 MB (CUDA) and 256 MB (MPS). :func:`resilient` covers an underestimate."""

MAX_BATCH = 16
"""More tiles per pass than this buy nothing on a GPU and delay the first result."""


def available_devices() -> list[str]:
    """Devices this machine can run on, best first: ``cuda``, ``mps``, ``cpu``."""
    import torch

    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 natively (so autocast speeds training up)."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        try:
            if getattr(cpu, probe)():
                return True
        except (AttributeError, RuntimeError):
            continue
    return False


def resolve_device(device: str = "auto") -> str:
    """``auto`` → the best available device; an explicit one is checked to exist."""
    have = available_devices()
    if device in (None, "", "auto"):
        return have[0]
    kind = device.split(":")[0]
    if kind not in have:
        raise ValueError(
            f"device {device!r} is not available on this machine; choose one of "
            f"{', '.join(['auto', *have])}"
        )
    return device


def to_device(a, device):
    """A numpy array (made contiguous) or a tensor, as a tensor on ``device`` (a name or
    a ``torch.device``)."""
    import torch

    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device, non_blocking=str(device).startswith("cuda"))


def autocast(device: str):
    """Float16 autocast on CUDA (inference: half the memory, tensor cores); else nothing."""
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class _TorchBackend:
    """Memory of a real CUDA or MPS device, as torch reports it."""

    def __init__(self, device: str):
        self.device = device

    def mem_get_info(self) -> tuple[int, int]:
        import torch

        if self.device.startswith("cuda"):
            return torch.cuda.mem_get_info(torch.device(self.device))
        total = int(torch.mps.recommended_max_memory())
        return max(0, total - int(torch.mps.driver_allocated_memory())), total

    def empty_cache(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        else:
            torch.mps.empty_cache()


def backend_of(device: str):
    """torch's memory backend of a CUDA or MPS device; None for the CPU (no memory limit asked)."""
    return _TorchBackend(device) if device.split(":")[0] in PER_PIXEL_BYTES else None


def batch_for(device: str, tile: int, *, backend=None, share: float = 0.5) -> int:
    """Tiles per forward pass of ``tile``² on ``device``.

    The CPU takes one (measured: batches there only cost cache, ``segment``'s
    docstring); a GPU as many as fit in ``share`` of its free memory at
    :data:`PER_PIXEL_BYTES`, at least 1 and at most :data:`MAX_BATCH`.
    """
    kind = device.split(":")[0]
    backend = backend if backend is not None else backend_of(device)
    if kind not in PER_PIXEL_BYTES or backend is None:
        return 1
    try:
        free, _ = backend.mem_get_info()
    except (RuntimeError, AttributeError):  # a driver that cannot say: be modest
        return 1
    per_tile = PER_PIXEL_BYTES[kind] * tile * tile
    return int(np.clip(share * free // per_tile, 1, MAX_BATCH))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device (or host) running out of memory."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class TileTooLarge(MemoryError):
    """One tile does not fit in the device's memory (a MemoryError, not a RuntimeError:
    superqt drops ``finished`` after a RuntimeError, so the widget would not recover)."""

    def __init__(self, tile: int, device: str, cause: BaseException | None = None):
        self.tile, self.device = tile, device
        super().__init__(
            f"one {tile}² tile does not fit in the memory of {device}"
            + (f" ({str(cause).splitlines()[0][:200]})" if cause else "")
        )


def resilient(
    predictor: Callable[[np.ndarray], np.ndarray],
    device: str,
    *,
    backend=None,
    on_retry: Callable[[str], None] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """``predictor``, predicting a batch in halves when the device runs out of memory.

    After an out-of-memory error the device's cache is emptied and the batch
    split in two, recursively; the batch size that worked is kept for the next
    calls. A single tile that does not fit raises :class:`TileTooLarge`.
    ``on_retry`` is told (in words) each time the batch shrinks.
    """
    backend = backend if backend is not None else backend_of(device)
    state = {"most": None}

    def run(batch: np.ndarray) -> np.ndarray:
        most = state["most"]
        if most is not None and len(batch) > most:
            return np.concatenate([run(batch[i : i + most]) for i in range(0, len(batch), most)])
        try:
            return predictor(batch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if backend is not None:
                backend.empty_cache()
            n = len(batch)
            if n == 1:
                raise TileTooLarge(int(batch.shape[-1]), device, exc) from exc
            state["most"] = half = (n + 1) // 2
            if on_retry:
                on_retry(f"{device} ran out of memory with {n} tiles at once; now {half}")
            return np.concatenate([run(batch[:half]), run(batch[half:])])

    return run
