"""Bad inputs, bad options and strangers' bundles, thrown at the CLI and the napari reader.

    python benchmarks/robustness.py [--out benchmarks/results/robustness.json]

Every case runs `cultureseg segment` (in this process, through ``cli.main``)
or the napari reader on something a user could give it, in a scratch folder,
and is classified:

``clear error``
    refused with a message (exit 1 or 2, no traceback), nothing else changed;
``handled``
    a valid input that looks odd (a constant image, a bool image …), segmented;
``crash``
    an exception escaped, or a traceback was printed;
``silent wrong``
    exit 0 where the input cannot be segmented as asked;
``side effect``
    an input file changed, or a file appeared outside ``--out``, or outputs were
    written for a run that was refused.

The table goes to ``benchmarks/results/robustness.json`` and the README's
robustness section. The model is a small untrained U-Net (the checks are about
the engine, not the weights); the bundled models load the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _md5s(folder: Path) -> dict[str, str]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


class Lab:
    """A scratch folder with a model home, inputs and an output folder per case."""

    def __init__(self, root: Path):
        self.root = root
        self.inputs = root / "inputs"
        self.inputs.mkdir()
        os.environ["CULTURESEG_HOME"] = str(root / "home")
        self._model()

    def _model(self) -> None:
        import torch

        from napari_cultureseg.core.bundle_config import BundleConfig, ClassSpec
        from napari_cultureseg.core.bundles import Bundle, user_models_dir

        torch.manual_seed(0)
        cfg = BundleConfig(
            "tiny",
            "unet",
            (ClassSpec("cell", instances=True, min_size=0),),
            params={"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": [16, 8, 8]},
            tile=64,
        )
        Bundle(cfg).save(user_models_dir() / "tiny")

    def file(self, name: str, write) -> Path:
        p = self.inputs / name
        write(p)
        return p


def _tif(arr, **kw):
    import tifffile

    return lambda p: tifffile.imwrite(p, arr, **kw)


def _png(arr):
    import imageio.v3 as iio

    return lambda p: iio.imwrite(p, arr)


def _bytes(data: bytes):
    return lambda p: p.write_bytes(data)


def _truncate(write, keep: float):
    def w(p):
        write(p)
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    return w


def _huge_declared(p):
    import tifffile

    z = np.zeros((2048, 2048), np.uint8)
    n = -(-40000 // 2048)
    tifffile.imwrite(
        p,
        (z for _ in range(n * n)),
        shape=(40000, 40000),
        dtype=np.uint8,
        compression="zlib",
        tile=(2048, 2048),
    )


def image_cases(lab: Lab):
    """(name, path or paths, extra CLI options, should it fail?)"""
    rng = np.random.default_rng(0)
    good = (rng.random((96, 128)) * 4000).astype(np.uint16)
    g = lab.file("good.tif", _tif(good))
    cases = [
        ("empty file", lab.file("empty.tif", _bytes(b"")), [], True),
        ("text named .tif", lab.file("text.tif", _bytes(b"hello, I am not an image\n")), [], True),
        (
            "truncated PNG",
            lab.file("trunc.png", _truncate(_png((good >> 8).astype(np.uint8)), 0.4)),
            [],
            True,
        ),
        (
            "truncated TIFF",
            lab.file("trunc.tif", _truncate(_tif(good, compression="zlib"), 0.5)),
            [],
            True,
        ),
        ("1x1 image", lab.file("one.tif", _tif(np.ones((1, 1), np.uint8))), [], True),
        ("3x5 image", lab.file("tiny.tif", _tif(np.ones((3, 5), np.uint8))), [], True),
        ("1-D array", lab.file("line.tif", _tif(np.arange(100, dtype=np.uint16))), [], True),
        ("4-D stack", lab.file("4d.tif", _tif(np.zeros((2, 3, 64, 64), np.uint16))), [], True),
        (
            "stack without --plane",
            lab.file("stack.tif", _tif(np.zeros((5, 64, 64), np.uint16))),
            [],
            True,
        ),
        ("--plane beyond the stack", lab.inputs / "stack.tif", ["--plane", "9"], True),
        ("--plane -100", lab.inputs / "stack.tif", ["--plane", "-100"], True),
        ("--plane on a single plane", g, ["--plane", "3"], True),
        (
            "all-NaN float image",
            lab.file("nan.tif", _tif(np.full((64, 64), np.nan, np.float32))),
            [],
            True,
        ),
        (
            "complex pixels",
            lab.file("complex.tif", _tif(np.zeros((64, 64), np.complex64))),
            [],
            True,
        ),
        (
            "2-channel image (H, W, 2)",
            lab.file("two.tif", _tif(np.zeros((64, 64, 2), np.uint8), photometric="minisblack")),
            [],
            True,
        ),
        (
            "16-channel stack, channels last, no --plane",
            lab.file(
                "spectral.tif",
                _tif(
                    np.zeros((256, 256, 16), np.uint16),
                    photometric="minisblack",
                    planarconfig="contig",
                ),
            ),
            [],
            True,
        ),
        (
            # a TIFF this size is segmented block by block by default (hours here): kept
            # in memory (--block 0), it must be refused before it is read
            "image beyond available memory (40000² declared, --block 0)",
            lab.file("huge.tif", _huge_declared),
            ["--block", "0"],
            True,
        ),
        ("unsupported extension (.bmp)", lab.file("pic.bmp", _bytes(b"BM" + bytes(64))), [], True),
        ("missing file", lab.inputs / "nope.tif", [], True),
        ("folder without images", lab.inputs / "emptydir", [], True),
        ("file name of 250 characters", lab.file("L" * 246 + ".tif", _tif(good)), [], True),
        (
            "path over 4096 characters",
            Path(str(lab.inputs) + "/" + "d/" * 2100 + "x.tif"),
            [],
            True,
        ),
        (
            "inf values",
            lab.file("inf.tif", _tif(np.where(good > 2000, np.inf, good).astype(np.float32))),
            [],
            False,
        ),
        ("constant image", lab.file("flat.tif", _tif(np.zeros((64, 64), np.uint16))), [], False),
        ("bool image", lab.file("bool.tif", _tif(good > 2000)), [], False),
        (
            "float64 beyond float32",
            lab.file("f64.tif", _tif(good.astype(np.float64) * 1e300)),
            [],
            False,
        ),
        (
            "RGBA PNG",
            lab.file("rgba.png", _png(np.dstack([(good >> 8).astype(np.uint8)] * 4))),
            [],
            False,
        ),
        ("16-channel stack with --plane", lab.inputs / "spectral.tif", ["--plane", "3"], False),
    ]
    (lab.inputs / "emptydir").mkdir()
    return cases, g


def option_cases(good: Path):
    return [
        ("--overlap 2", good, ["--overlap", "2"], True),
        ("--overlap -0.1", good, ["--overlap", "-0.1"], True),
        ("--tile 0", good, ["--tile", "0"], True),
        ("--tile 100000", good, ["--tile", "100000"], True),
        ("--tile 100 (not a multiple of the stride)", good, ["--tile", "100"], True),
        ("--batch-size 0", good, ["--batch-size", "0"], True),
        ("--threads -1", good, ["--threads", "-1"], True),
        ("--diameter -5", good, ["--diameter", "-5"], True),
        ("--diameter abc", good, ["--diameter", "abc"], True),
        ("--pixel-size 0", good, ["--pixel-size", "0"], True),
        ("--tta 3", good, ["--tta", "3"], True),
        ("--device cuda without a GPU", good, ["--device", "cuda"], True),
        ("--model that does not exist", good, ["--model", "nope"], True),
    ]


def _first(err: str) -> str:
    """The message that says what went wrong (the first line of it)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return lines[0][:240] if lines else ""


def run_cli(args: list[str]) -> tuple[int | str, str]:
    from napari_cultureseg.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # noqa: BLE001  (a crash is what is being counted)
            return "crash", f"{type(exc).__name__}: {exc}"
    return code, err.getvalue()


def classify(
    code, err: str, should_fail: bool, outside: bool, changed: bool, wrote_when_refused: bool
) -> str:
    if code == "crash" or "Traceback" in err:
        return "crash"
    if changed or outside or wrote_when_refused:
        return "side effect"
    if should_fail:
        return "clear error" if code in (1, 2) and err.strip() else "silent wrong"
    return "handled" if code == 0 else "clear error"


def bundle_cases(lab: Lab) -> list[tuple[str, callable]]:
    """Ways a stranger's bundle can be bad: each edits a copy of the tiny bundle."""
    import shutil

    from napari_cultureseg.core.bundles import user_models_dir

    src = user_models_dir() / "tiny"

    def edit(key, value):
        def f(folder: Path):
            d = json.loads((folder / "config.json").read_text())
            node = d
            parts = key.split(".")
            for k in parts[:-1]:
                node = node[int(k)] if isinstance(node, list) else node[k]
            node[parts[-1]] = value
            (folder / "config.json").write_text(json.dumps(d))

        return f

    def raw(text):
        return lambda folder: (folder / "config.json").write_text(text)

    def pickle_weights(folder):
        import pickle

        class Boom:
            def __reduce__(self):
                return (os.system, (f"touch {lab.root}/PWNED",))

        (folder / "weights.safetensors").write_bytes(pickle.dumps(Boom()))

    def no_weights(folder):
        (folder / "weights.safetensors").unlink()

    def wrong_weights(folder):
        d = json.loads((folder / "config.json").read_text())
        d["params"]["decoder_channels"] = [32, 16, 8]  # the weights are for 16, 8, 8
        (folder / "config.json").write_text(json.dumps(d))

    cases = [
        ("threshold -1", edit("classes.0.threshold", -1)),
        ("threshold NaN", edit("classes.0.threshold", float("nan"))),
        ("tile 0", edit("tile", 0)),
        ("tile 100000", edit("tile", 100000)),
        ("unknown params key", edit("params.extra", 1)),
        ("hub encoder name", edit("params.encoder", "tu-hf-hub:timm/resnet18.a1_in1k")),
        ("class name with a path", edit("classes.0.name", "x/../../evil")),
        ("architecture not registered", edit("architecture", "transformer-xl")),
        ("percentiles low > high", edit("input.normalisation.low", 99.99)),
        ("channels 7", edit("input.channels", 7)),
        ("config is a JSON list", raw("[1, 2, 3]")),
        ("config is not JSON", raw("{not json")),
        ("format missing", edit("format", "something-else/9")),
        ("weights are a pickle", pickle_weights),
        ("weights missing", no_weights),
        ("weights of another architecture", wrong_weights),
        ("negative scale diameter", edit("scale", {"diameter": -3, "reference": "cell"})),
    ]
    out = []
    for name, f in cases:
        folder = lab.root / "bundles" / name.replace(" ", "_").replace("/", "_")
        shutil.copytree(src, folder)
        f(folder)
        out.append((name, folder))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robustness.json"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="robust-") as tmp:
        lab = Lab(Path(tmp))
        cases, good = image_cases(lab)
        cases += option_cases(good)
        for i, (name, path, extra, should_fail) in enumerate(cases):
            out = lab.root / f"out{i}"
            before = _md5s(lab.inputs)
            outside_before = set(os.listdir(lab.root))
            code, err = run_cli(
                [
                    "segment",
                    str(path),
                    "--model",
                    "tiny",
                    "--out",
                    str(out),
                    "--quiet",
                    "--diameter",
                    "none",
                    *extra,
                ]
            )
            after = _md5s(lab.inputs)
            changed = any(before.get(k) != v for k, v in after.items() if k in before)
            new_top = set(os.listdir(lab.root)) - outside_before - {out.name}
            wrote = out.is_dir() and any(p.suffix == ".tif" for p in out.iterdir())
            kind = classify(code, err, should_fail, bool(new_top), changed, should_fail and wrote)
            rows.append(
                {"what": "CLI", "case": name, "exit": code, "result": kind, "message": _first(err)}
            )
            print(f"{kind:>12}  {name}: {rows[-1]['message'][:110]}", flush=True)
        # the napari reader on every bad file: ImageError or declined, never another error
        from napari_cultureseg._reader import get_reader
        from napari_cultureseg.core.images import ImageError

        # napari shows what it can: stacks (a slider picks the plane), tiny or all-NaN
        # images (Segment then refuses them with the reason); the rest must be refused
        shown = {
            "1x1 image",
            "3x5 image",
            "4-D stack",
            "stack without --plane",
            "all-NaN float image",
            "2-channel image (H, W, 2)",
            "16-channel stack, channels last, no --plane",
            "file name of 250 characters",
        }
        for name, path, extra, should_fail in cases:
            if extra or not should_fail or "path over" in name:
                continue
            try:
                reader = get_reader(str(path))
                if reader is None:
                    kind, msg = "clear error", "declined (another reader may open it)"
                else:
                    layers = reader(str(path))
                    msg = f"opened as {layers[0][0].shape}"
                    kind = "handled" if name in shown else "silent wrong"
            except ImageError as exc:
                kind, msg = "clear error", str(exc)
            except Exception as exc:  # noqa: BLE001
                kind, msg = "crash", f"{type(exc).__name__}: {exc}"
            rows.append({"what": "reader", "case": name, "result": kind, "message": msg[:200]})
            print(f"{kind:>12}  reader {name}: {msg[:100]}", flush=True)
        for name, folder in bundle_cases(lab):
            out = lab.root / f"outb-{folder.name}"
            code, err = run_cli(
                [
                    "segment",
                    str(good),
                    "--model",
                    str(folder),
                    "--out",
                    str(out),
                    "--quiet",
                    "--diameter",
                    "none",
                ]
            )
            pwned = (lab.root / "PWNED").exists()
            wrote = out.is_dir() and any(p.suffix == ".tif" for p in out.iterdir())
            kind = "side effect" if pwned else classify(code, err, True, False, False, wrote)
            rows.append(
                {
                    "what": "bundle",
                    "case": name,
                    "exit": code,
                    "result": kind,
                    "message": _first(err),
                }
            )
            print(f"{kind:>12}  bundle {name}: {rows[-1]['message'][:110]}", flush=True)
    summary = {}
    for r in rows:
        s = summary.setdefault(r["what"], {})
        s[r["result"]] = s.get(r["result"], 0) + 1
    result = {"summary": summary, "cases": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    bad = sum(
        n
        for s in summary.values()
        for k, n in s.items()
        if k in ("crash", "silent wrong", "side effect")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
