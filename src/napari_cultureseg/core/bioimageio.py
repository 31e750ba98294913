"""Models that leave the project: bioimage.io model packages, written and read back.

:func:`export_package` writes a bundle as a bioimage.io model (spec 0.5, built and
validated with ``bioimageio.spec``): the network with its sigmoid as ONNX and
TorchScript weights (no ``pytorch_state_dict``: the spec stores those as a torch
pickle, which this project never writes nor reads), the input's percentile
normalisation as ``scale_range`` preprocessing, a test input and the output our
engine computes for it, the card as documentation, its licence, citations and
metrics, and, as attachments, the bundle's own ``config.json`` and
``weights.safetensors``. :func:`import_package` reads those two back, so a package
exported here comes back as the same bundle (identical outputs); a package made
elsewhere has no bundle inside and is refused with the reason.

What bioimage.io cannot say is said in the description and left out of the
preprocessing: a 3×3 median (``fluorescence-nuclei``), background flattening,
whole-image resizing (``spheroid-multiscale``) and the object-size resampling
(the package runs at the model's training scale; the bundle records that size).
For such models the test input is the image after those steps.

``bioimageio.spec`` and ``bioimageio.core`` are optional (``pip install
'napari-cultureseg[bioimageio]'``); only these functions need them.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np

PROJECT_URL = "https://github.com/napari-cultureseg/napari-cultureseg#readme"
ATTACHED = ("config.json", "weights.safetensors")


def output_names(cfg) -> list[str]:
    """A name per output channel: the classes, then border, distance and flow channels."""
    from .bundle_config import boundary_channels, distance_channels, flow_channels

    names = [c.name for c in cfg.classes]
    names += [f"{n}_border" for n in boundary_channels(cfg.classes)]
    names += [f"{n}_distance" for n in distance_channels(cfg.classes)]
    for n in flow_channels(cfg.classes):
        names += [f"{n}_flow_y", f"{n}_flow_x"]
    return names


def _unsaid(cfg) -> list[str]:
    inp, out = cfg.input, []
    if inp.median3:
        out.append("a 3x3 median filter of every channel")
    if inp.normalisation.flatten:
        out.append(f"background flattening (Gaussian of {inp.normalisation.flatten} px)")
    if inp.histogram_reference:
        out.append("histogram matching to the training images")
    if inp.resize_to:
        out.append(f"resizing the whole image so its longer side is {inp.resize_to} px")
    return out


def _test_image(cfg, side: int) -> np.ndarray:
    """A synthetic phase-contrast field as the package's test input (any content will do)."""
    from .model_input import prepared_input
    from .synth import phase_culture

    plane = phase_culture((side, side), seed=7)[0]
    if cfg.input.channels == 3:
        plane = np.stack([plane] * 3, -1)
    return prepared_input(plane, cfg.input)


def export_package(bundle, out: str | Path, *, test: bool = True) -> Path:
    """Write ``bundle`` as a bioimage.io model package (a .zip) at ``out``.

    With ``test`` the package is then tested by ``bioimageio.core`` (it runs the
    test input through every weights format and compares with the test output);
    a failure raises ValueError with the summary, and nothing is left at ``out``.
    """
    import bioimageio.spec.model.v0_5 as v
    import torch
    from bioimageio.spec import save_bioimageio_package

    from .model_input import normalise
    from .nets import output_stride
    from .runtimes import OPSET, _export

    cfg = bundle.config
    norm = cfg.input.normalisation
    if norm.kind not in ("percentile", "none"):
        raise ValueError(f"{cfg.name}: its normalisation cannot be written for bioimage.io")
    out = Path(out)
    stride = output_stride(cfg.architecture, cfg.params)
    side = max(256, 2 * stride) if not cfg.input.resize_to else cfg.input.resize_to
    side = -(-side // stride) * stride
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle.save(tmp / "bundle")
        raw = _test_image(cfg, side)[None].astype(np.float32)
        x = normalise(raw[0], cfg.input.normalisation)[None]
        with torch.inference_mode():
            y = torch.sigmoid(bundle.network("cpu")(torch.from_numpy(x))).numpy()
        np.save(tmp / "test_input.npy", raw)
        np.save(tmp / "test_output.npy", y)
        _export(bundle, tmp / "weights.onnx")
        _torchscript(bundle, x, tmp / "weights_torchscript.pt")
        _cover(raw[0, 0], y[0, 0], tmp / "cover.png")

        pre = []
        if norm.kind == "percentile":
            kw = v.ScaleRangeKwargs(
                axes=[v.AxisId("y"), v.AxisId("x")],
                min_percentile=norm.low,
                max_percentile=norm.high,
            )
            pre = [v.ScaleRangeDescr(kwargs=kw)]
        channel_in = ["gray"] if cfg.input.channels == 1 else ["red", "green", "blue"]
        inputs = [
            v.InputTensorDescr(
                id=v.TensorId("input"),
                description="the image (before percentile normalisation)",
                axes=[
                    v.BatchAxis(),
                    v.ChannelAxis(channel_names=[v.Identifier(c) for c in channel_in]),
                    v.SpaceInputAxis(
                        id=v.AxisId("y"), size=v.ParameterizedSize(min=stride, step=stride)
                    ),
                    v.SpaceInputAxis(
                        id=v.AxisId("x"), size=v.ParameterizedSize(min=stride, step=stride)
                    ),
                ],
                test_tensor=v.FileDescr(source=tmp / "test_input.npy"),
                preprocessing=pre,
            )
        ]
        outputs = [
            v.OutputTensorDescr(
                id=v.TensorId("probabilities"),
                description="one probability per class (classes may overlap), then the "
                "object-separation channels (distance to the outline, or flows)",
                axes=[
                    v.BatchAxis(),
                    v.ChannelAxis(channel_names=[v.Identifier(c) for c in output_names(cfg)]),
                    v.SpaceOutputAxis(
                        id=v.AxisId("y"),
                        size=v.SizeReference(tensor_id=v.TensorId("input"), axis_id=v.AxisId("y")),
                    ),
                    v.SpaceOutputAxis(
                        id=v.AxisId("x"),
                        size=v.SizeReference(tensor_id=v.TensorId("input"), axis_id=v.AxisId("x")),
                    ),
                ],
                test_tensor=v.FileDescr(source=tmp / "test_output.npy"),
            )
        ]
        card = cfg.card or {}
        unsaid = _unsaid(cfg)
        description = (cfg.description or cfg.name).strip()
        if unsaid:
            description += " Before the network, apply: " + "; ".join(unsaid) + "."
        if cfg.scale.diameter:
            description += (
                f" Trained with {cfg.scale.reference or 'objects'} of about "
                f"{cfg.scale.diameter:.0f} px: resample images so theirs are that size."
            )
        cite = [
            v.CiteEntry(text="napari-cultureseg (the model's training and engine)", url=PROJECT_URL)
        ]
        for key in ("attribution", "published"):
            if card.get(key):
                cite.append(
                    v.CiteEntry(text=" ".join(str(card[key]).split())[:500], url=PROJECT_URL)
                )
        doc = tmp / "README.md"
        doc.write_text(
            (bundle.path / "card.md").read_text()
            if bundle.path and (bundle.path / "card.md").is_file()
            else description
        )
        descr = v.ModelDescr(
            name=f"napari-cultureseg {cfg.name}",
            description=description[:1024],
            covers=[v.FileDescr(source=tmp / "cover.png")],
            authors=[v.Author(name="napari-cultureseg developers")],
            cite=cite,
            license=v.LicenseId(_spdx(card.get("licence"))),
            documentation=v.FileDescr(source=doc),
            tags=["napari-cultureseg", "segmentation", "2d", cfg.modality or "microscopy"],
            inputs=inputs,
            outputs=outputs,
            weights=v.WeightsDescr(
                onnx=v.OnnxWeightsDescr(source=tmp / "weights.onnx", opset_version=OPSET),
                torchscript=v.TorchscriptWeightsDescr(
                    source=tmp / "weights_torchscript.pt",
                    pytorch_version=v.Version(torch.__version__.split("+")[0]),
                ),
            ),
            attachments=[v.FileDescr(source=tmp / "bundle" / f) for f in ATTACHED],
            config={"napari_cultureseg": {"bundle": list(ATTACHED)}},
        )
        if test:
            from bioimageio.core import test_model

            summary = test_model(descr)
            if summary.status != "passed":
                raise ValueError(f"the bioimage.io test of {cfg.name} failed: {summary.format()}")
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.part")
        save_bioimageio_package(descr, output_path=part)
        part.replace(out)
    return out


def _spdx(licence: str | None) -> str:
    """The SPDX id a card's licence starts with (``"BSD-3-Clause (the weights ...)"``); the
    project's own, BSD-3-Clause, when the card names none."""
    return (licence or "BSD-3-Clause").split()[0].strip(",;")


def _torchscript(bundle, x: np.ndarray, path: Path) -> None:
    import warnings

    import torch

    from .runtimes import with_sigmoid

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        traced = torch.jit.trace(with_sigmoid(bundle), torch.from_numpy(x), check_trace=False)
    traced.save(str(path))


def _cover(image: np.ndarray, prob: np.ndarray, path: Path) -> None:
    import imageio.v3 as iio

    lo, hi = np.percentile(image, [1, 99.8])
    a = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    iio.imwrite(path, (np.concatenate([a, prob], 1) * 255).astype(np.uint8))


def import_package(source: str | Path, dest: str | Path) -> Path:
    """The bundle inside a package that :func:`export_package` wrote, saved at ``dest``.

    Only the attached ``config.json`` and ``weights.safetensors`` are read (JSON and
    tensors: nothing in the package runs); the bundle is then loaded and checked as any
    bundle. A package without them (made by other software) is refused, saying why.
    """
    from .bundle_config import BundleError
    from .bundles import Bundle

    source, dest = Path(source), Path(dest)
    try:
        with zipfile.ZipFile(source) as z:
            names = set(z.namelist())
            missing = [f for f in ATTACHED if f not in names]
            if missing:
                raise BundleError(
                    f"{source.name} holds no napari-cultureseg bundle ({', '.join(missing)} "
                    "missing): only packages exported by `cultureseg export` can be imported; "
                    "run other bioimage.io models with bioimageio.core or their own software"
                )
            with tempfile.TemporaryDirectory() as tmp:
                for f in ATTACHED:
                    (Path(tmp) / f).write_bytes(z.read(f))
                bundle = Bundle.load(tmp)
                bundle.save(dest)
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{source}: not a bioimage.io package (.zip): {exc}") from exc
    return dest
