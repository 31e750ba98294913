"""Running a bundle's network: torch, or ONNX Runtime on the CPU.

``runtime="onnx"`` (and ``auto``, the default, on a CPU) exports the network (with
its sigmoid) to ONNX once and runs it with ONNX Runtime's CPU provider.
``benchmarks/runtimes.py`` segmented every real-data model's test images both ways
(one thread, the same zoom, beside two other jobs): the same Dice to five decimals
for every class of four models, probabilities within 2e-5, and ONNX Runtime 1.8×
(coculture-celltype) to 1.9× (phase-cells, fluorescence-nuclei) and 2.4×
(brightfield-nucleus-cell) faster. The speed on an idle machine is
``benchmarks/speed.py``'s to report.

The ONNX file is a cache, not a model format: it lives in the user's folder
(``$CULTURESEG_HOME/cache/onnx``, never beside a bundle from elsewhere), named for
the hash of the bundle's weights and network settings, with a sidecar recording
that key and the file's own SHA-256; a file whose hash does not match is never
run but exported again. A network that cannot be exported (or an ONNX Runtime
that is not installed) falls back to torch, with the reason in
:attr:`Runtime.note`.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RUNTIMES = ("auto", "torch", "onnx")
"""``auto`` (the default): ONNX Runtime on the CPU when it is installed, torch on a GPU.
``torch``: the network in PyTorch (any device). ``onnx``: ONNX Runtime on the CPU."""

OPSET = 18

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""``{bundle: {threads: predictor}}``: one ONNX Runtime session per bundle and thread count."""


@dataclass
class Runtime:
    """A predictor and how it runs: ``name`` what runs, ``note`` why not the one asked for."""

    predict: Callable[[np.ndarray], np.ndarray]
    name: str
    note: str = ""


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    return runtime


def network_key(bundle) -> str:
    """SHA-256 of what decides the network's outputs: architecture, params, outputs, weights."""
    cfg = bundle.config
    h = hashlib.sha256()
    head = {"architecture": cfg.architecture, "params": cfg.params, "channels": cfg.input.channels}
    h.update(json.dumps({**head, "outputs": cfg.n_outputs}, sort_keys=True).encode())
    for name, tensor in sorted(bundle.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_dir() -> Path:
    from .bundles import home_dir

    return home_dir() / "cache" / "onnx"


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_file(bundle, *, folder: Path | None = None) -> Path:
    """The bundle's network as an ONNX file in the cache, exported now if needed."""
    key = network_key(bundle)
    folder = Path(folder) if folder is not None else cache_dir()
    path = folder / f"{bundle.config.name}-{key[:20]}.onnx"
    side = path.with_suffix(".json")
    if path.is_file() and side.is_file():
        try:
            meta = json.loads(side.read_text())
        except ValueError:
            meta = {}
        if meta.get("network") == key and meta.get("sha256") == _file_sha(path):
            return path
    from .atomic import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    side.unlink(missing_ok=True)  # no sidecar vouches for a file being replaced
    write_atomic(path, lambda tmp: _export(bundle, tmp))
    text = json.dumps({"network": key, "sha256": _file_sha(path), "opset": OPSET}, indent=1)
    write_atomic(side, lambda tmp: tmp.write_text(text + "\n"))
    return path


def with_sigmoid(bundle):
    """The bundle's network on the CPU followed by its sigmoid: probabilities out, as every
    predictor gives them (what the ONNX and TorchScript exports hold)."""
    import torch

    net = bundle.network("cpu")

    class WithSigmoid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.sigmoid(self.net(x))

    return WithSigmoid().eval()


def _export(bundle, path: Path) -> None:
    import warnings

    import torch

    # any size on every architecture's stride will do: height and width stay free
    x = torch.zeros(1, bundle.config.input.channels, 256, 256)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            with_sigmoid(bundle),
            (x,),
            str(path),
            input_names=["input"],
            output_names=["probabilities"],
            dynamic_axes={"input": axes, "probabilities": axes},
            opset_version=OPSET,
            dynamo=False,
        )


def onnx_predictor(bundle, *, threads: int | None = None, folder: Path | None = None):
    """A predictor running the bundle's network with ONNX Runtime on the CPU."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        str(onnx_file(bundle, folder=folder)), opts, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return session.run(None, {name: x})[0]

    return predict


def predictor_for(bundle, device: str, runtime: str = "auto") -> Runtime:
    """The bundle's predictor on ``device`` with ``runtime``, falling back to torch (and
    saying why) where ONNX Runtime cannot run it."""
    check_runtime(runtime)
    if runtime == "auto":  # ONNX Runtime where it is installed and helps: the CPU
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return Runtime(bundle.predictor(device), "torch")
        runtime = "onnx" if device == "cpu" else "torch"
    if runtime == "onnx":
        if device != "cpu":
            note = f"the onnx runtime runs on the CPU; {device} runs torch"
            return Runtime(bundle.predictor(device), "torch", note)
        try:
            import torch

            threads = torch.get_num_threads()
            known = _SESSIONS.setdefault(bundle, {})
            if threads not in known:
                known[threads] = onnx_predictor(bundle, threads=threads)
            return Runtime(known[threads], "onnx")
        except ImportError:
            note = "onnxruntime is not installed (pip install onnxruntime); running torch"
        except Exception as exc:  # an architecture the exporter cannot trace
            note = f"could not export {bundle.config.name} to ONNX ({type(exc).__name__}: "
            note += f"{str(exc).splitlines()[0][:160]}); running torch"
        return Runtime(bundle.predictor(device), "torch", note)
    return Runtime(bundle.predictor(device), "torch")
