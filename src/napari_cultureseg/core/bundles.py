"""Model bundles: a folder with ``config.json`` and ``weights.safetensors``.

::

    phase-cells/
    ├── config.json          architecture, classes (names, colours, thresholds,
    │                        post-processing), input spec, tiling, lineage, card
    └── weights.safetensors  tensors only: loading a bundle never runs code

Bundles that ship with the package live in ``napari_cultureseg/models/``;
the user's own (fine-tuned versions, imported models) under
``$CULTURESEG_HOME/models`` (default ``~/.cultureseg/models``). Writes are
atomic: a bundle is written to a hidden temporary folder and renamed into
place, so a crash never leaves half a model behind.

What ``config.json`` holds (:class:`BundleConfig`, :class:`ClassSpec`,
:class:`ScaleSpec`) is in :mod:`.bundle_config`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import swap_in
from .bundle_config import FORMAT, BundleConfig, BundleError

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
AUX = ("discriminator",)
"""Extra networks a bundle may carry beside its model, each as ``<name>.safetensors``:
the ``discriminator`` of an adversarially trained model (Sadanandan et al. 2017), so that
fine-tuning it goes on against the discriminator it was trained with."""
DEFAULT_MODEL = "phase-cells"


class Bundle:
    """A model: its :class:`BundleConfig` and its weights, built into a network on demand.

    The network is built once per device and kept, so repeated predictions
    do not rebuild it.
    """

    def __init__(
        self,
        config: BundleConfig,
        state: dict | None = None,
        path: Path | None = None,
        aux: dict[str, dict] | None = None,
    ):
        self.config = config
        self.path = path
        self._state = state
        self.aux = dict(aux or {})
        """Extra state dicts by name (see ``AUX``), saved beside the weights."""
        unknown = set(self.aux) - set(AUX)
        if unknown:
            raise BundleError(f"unknown extra networks {sorted(unknown)}; known: {list(AUX)}")
        self._nets: dict[str, Any] = {}

    # ------------------------------------------------------------- building
    def build(self):
        """A fresh network with this bundle's architecture and weights (on the CPU)."""
        from .nets import create_model

        net = create_model(
            self.config.architecture,
            in_channels=self.config.input.channels,
            classes=self.config.n_outputs,
            **self.config.params,
        )
        if self._state is None:  # a new model: its first initialisation becomes its weights
            self._state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            import torch

            state = {
                k: v.to(torch.float32) if v.is_floating_point() else v
                for k, v in self._state.items()
            }
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise BundleError(
                    f"weights of {self.config.name!r} do not fit its architecture "
                    f"{self.config.architecture!r}: {str(exc)[:300]}"
                ) from exc
        return net.eval()

    def network(self, device: str = "cpu"):
        """The network on ``device`` in eval mode, built on first use and cached."""
        if device not in self._nets:
            self._nets[device] = self.build().to(device)
        return self._nets[device]

    def state_dict(self) -> dict:
        """The weights as a state dict (a freshly initialised one if the bundle has none)."""
        if self._state is None:
            self.build()
        return self._state

    def predictor(self, device: str = "cpu"):
        """A function from ``(B, C, T, T)`` numpy input to ``(B, K, T, T)`` probabilities.

        Runs under ``torch.inference_mode``, with float16 autocast on CUDA.
        """
        import torch

        from .device import autocast, to_device

        net = self.network(device)

        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), autocast(device):
                return torch.sigmoid(net(to_device(batch, device)).float()).cpu().numpy()

        return predict

    # ------------------------------------------------------------- io
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the bundle folder atomically; returns its path."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and not overwrite:
            raise BundleError(f"{path} exists already; choose another name or overwrite=True")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            import torch

            dtype = {"float16": torch.float16, "float32": torch.float32}[self.config.storage_dtype]
            tensors = {
                k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                for k, v in self.state_dict().items()
            }
            save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
            for name, aux in self.aux.items():
                save_file(
                    {
                        k: v.to(dtype) if v.is_floating_point() else v
                        for k, v in ((k, v.contiguous()) for k, v in aux.items())
                    },
                    str(tmp / f"{name}.safetensors"),
                    metadata={"format": FORMAT},
                )
            (tmp / CONFIG).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Load a bundle folder. Only JSON and safetensors are read: nothing is unpickled."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG).is_file():
            raise BundleError(
                f"{path} is not a model bundle: it has no {CONFIG}. A bundle is a folder with "
                f"{CONFIG} and {WEIGHTS}; see `cultureseg models` for the installed ones."
            )
        try:
            d = json.loads((path / CONFIG).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path / CONFIG} is not valid JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise BundleError(
                f"{path / CONFIG} holds a {type(d).__name__}, not a bundle config "
                "(a JSON object with format, name, architecture, classes, ...)"
            )
        config = BundleConfig.from_dict(d)
        weights = path / WEIGHTS
        if not weights.is_file():
            raise BundleError(f"{path} has no {WEIGHTS}; the bundle is incomplete.")
        aux = {}
        try:
            state = load_file(str(weights))
            for name in AUX:
                weights = path / f"{name}.safetensors"
                if weights.is_file():
                    aux[name] = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"{weights} is not a readable safetensors file: {exc}") from exc
        return cls(config, state, path, aux)

    def with_config(self, **changes) -> Bundle:
        """A new bundle with the same weights and some config fields changed."""
        return Bundle(replace(self.config, **changes), self.state_dict(), None, self.aux)


# ---------------------------------------------------------------- where bundles live


def bundled_dir() -> Path:
    """Models that ship inside the package."""
    return Path(__file__).resolve().parent.parent / "models"


def home_dir() -> Path:
    """The user's cultureseg folder: ``$CULTURESEG_HOME`` or ``~/.cultureseg``."""
    return Path(os.environ.get("CULTURESEG_HOME") or Path.home() / ".cultureseg")


def user_models_dir() -> Path:
    return home_dir() / "models"


def list_bundles() -> dict[str, Path]:
    """Installed bundles by name: the user's first (they may shadow a bundled name)."""
    found: dict[str, Path] = {}
    for root in (bundled_dir(), user_models_dir()):
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if not p.name.startswith(".") and (p / CONFIG).is_file():
                    found[p.name] = p
    return found


def find_bundle(name_or_path: str | Path) -> Path:
    """Resolve a model name (see :func:`list_bundles`) or a bundle folder path."""
    p = Path(name_or_path)
    if (p / CONFIG).is_file():
        return p
    found = list_bundles()
    if str(name_or_path) in found:
        return found[str(name_or_path)]
    raise BundleError(
        f"no model named {str(name_or_path)!r}; installed: {', '.join(found) or 'none'}. "
        "Give a name from `cultureseg models` or the path of a bundle folder."
    )


_CACHE: dict[Path, tuple[float, Bundle]] = {}


def load_bundle(name_or_path: str | Path) -> Bundle:
    """Load a bundle by name or path, reusing the loaded one while its files are unchanged."""
    path = find_bundle(name_or_path).resolve()
    stamp = max((path / f).stat().st_mtime_ns for f in (CONFIG, WEIGHTS) if (path / f).exists())
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    bundle = Bundle.load(path)
    _CACHE[path] = (stamp, bundle)
    return bundle
