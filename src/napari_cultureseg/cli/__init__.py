"""The ``cultureseg`` command: the same engine as the napari widgets, headless.

::

    cultureseg models                                  # installed models and their classes
    cultureseg segment IMG... [--model M] --out DIR    # one mask TIFF per class
    cultureseg train --config configs/M.yaml           # train a bundle (from scratch or a parent)
    cultureseg evaluate DATA_DIR --model M             # metrics on images with ground truth
    cultureseg demo [--screenshot PNG]                 # napari with the Segment widget

This module holds the parser, :func:`main` and ``demo``; the commands live in
:mod:`.segment` (``segment``, ``plate``) with :mod:`.paths` (which inputs, which
outputs) and :mod:`.models` (``models``, ``train``, ``evaluate``, ``export``, ``import``).
"""

from __future__ import annotations

import argparse
import sys

from ..core.runtimes import RUNTIMES
from .models import cmd_evaluate, cmd_export, cmd_import, cmd_models, cmd_train
from .segment import cmd_plate, cmd_segment


def cmd_demo(args) -> int:
    from .._demo import has_display, rerun_under_xvfb
    from .._demo import main as demo

    if not has_display():
        return rerun_under_xvfb(sys.argv[1:])
    return demo(sample=args.sample, model=args.model, screenshot=args.screenshot)


def build_parser() -> argparse.ArgumentParser:
    from ..core.bundles import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="cultureseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list installed models and their classes")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("segment", help="segment images or folders; one mask TIFF per class")
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model name or bundle folder (default {DEFAULT_MODEL})",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--prob", action="store_true", help="also write <image>_<class>_prob.tif")
    p.add_argument(
        "--format",
        choices=("tif", "ome-zarr"),
        default="tif",
        help="tif: one mask TIFF per class (default); ome-zarr: one <image>.ome.zarr per "
        "image, the image and its masks as coloured, named label images (napari-ome-zarr, "
        "Fiji, QuPath read them; needs pip install 'napari-cultureseg[ome-zarr]')",
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="also write objects.csv (one row per object: size, shape, intensity, which "
        "objects of other classes hold or touch it) and wells.csv (per well of a plate, "
        "or per image: counts, confluence %%, mean object area)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="auto (default: onnx on a CPU, torch on a GPU), torch, or onnx: ONNX Runtime, "
        "about twice as fast on a CPU with the same masks (the network is exported once "
        "to $CULTURESEG_HOME/cache/onnx)",
    )
    p.add_argument("--tile", type=int, default=None, help="tile size (default: the model's)")
    p.add_argument(
        "--overlap", type=float, default=None, help="tile overlap fraction (default: the model's)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per forward pass (default: 1 on the CPU; on a GPU as many as fit in half "
        "its free memory, fewer if it runs out)",
    )
    p.add_argument("--plane", type=int, default=None, help="plane of a multi-plane file to segment")
    p.add_argument(
        "--block",
        type=int,
        default=None,
        help="segment TIFFs block by block, blocks of this side in pixels, read from disk as "
        "they are needed (default: only TIFF planes above 6144x6144 pixels, whole-well "
        "mosaics, in blocks of 2048; 0: never); their masks are written as tiled TIFFs",
    )
    p.add_argument(
        "--channel",
        default=None,
        help="the channel to segment in an OME-Zarr plate (its name, as `cultureseg plate` "
        "lists them; default: the first)",
    )
    p.add_argument(
        "--diameter",
        default="auto",
        help="object diameter in the images, in pixels (of the model's reference "
        "class, see `cultureseg models`); 'auto' (default) estimates it per "
        "image, 'none' segments at the images' own scale",
    )
    p.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        help="pixel size in µm, for models that know their own",
    )
    p.add_argument(
        "--tta",
        type=int,
        choices=[1, 2, 4, 8],
        default=None,
        help="test-time augmentation: average 2, 4 or 8 flipped/rotated copies "
        "(as many times slower); 1: none. Default: the model's own (1, except where "
        "its validation images chose more; `cultureseg models` says)",
    )
    p.add_argument(
        "--splitting",
        action="append",
        default=[],
        metavar="CLASS=LEVEL",
        help="how readily touching objects of a class are cut apart, 0-1 (higher: more "
        "cuts; default: the model's own, see `cultureseg models`), e.g. --splitting "
        "nucleus=0.4; for classes separated by a distance map; repeat for several classes",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that exist already (default: refuse)",
    )
    p.add_argument(
        "--rank",
        action="store_true",
        help="also write rank.csv: the fields by the model's uncertainty (mean entropy of "
        "its class probabilities), most uncertain first: the ones to correct next",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out: fields it finished are kept, the "
        "others are segmented (again)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="fields segmented at once, each in its own process on a local dask cluster "
        "(default 1: one after the other); the cores are shared between them",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="address of a running dask.distributed scheduler (e.g. tcp://host:8786) to "
        "segment the fields on its workers; they must see the images and --out at the "
        "same paths",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch per field (default: all cores, shared among --workers)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("train", help="train a model from a YAML config (see configs/)")
    p.add_argument("--config", required=True, help="e.g. configs/phase-cells.yaml")
    p.add_argument("--out", default=None, help="folder to save the bundle in (default: per config)")
    p.add_argument(
        "--data", default=None, help="data root (default: $CULTURESEG_DATA or the config's)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: all cores)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="write a model as a bioimage.io model package (.zip)")
    p.add_argument("model", help="model name or bundle folder")
    p.add_argument("out", help="the package to write, e.g. phase-cells.zip")
    p.add_argument("--format", choices=["bioimageio"], default="bioimageio")
    p.add_argument(
        "--no-test", action="store_true", help="do not run bioimageio.core's test of the package"
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="install a model from a package `cultureseg export` wrote")
    p.add_argument("package", help="the .zip")
    p.add_argument(
        "--name", default=None, help="install under this name (default: the file's, without .zip)"
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("evaluate", help="metrics of a model on images with ground truth")
    p.add_argument("data", help="folder with <id>_image.<ext> and <id>_<class>.tif")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--split",
        choices=["test", "val", "all"],
        default="test",
        help="test: only the model card's test images, which no training choice saw "
        "(default); val: its validation images; all: every image",
    )
    p.add_argument(
        "--diameter",
        default="auto",
        help="object size per image: auto (estimated, default), none, truth (from "
        "the reference masks: an oracle) or pixels",
    )
    p.add_argument(
        "--tta",
        type=int,
        choices=[1, 2, 4, 8],
        default=None,
        help="test-time augmentation copies (default: the model's own)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto", help="auto, torch or onnx (CPU)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument(
        "--record",
        action="store_true",
        help="store the metrics in the model's config.json and card.md",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plate", help="show the wells, fields and channels found in a plate folder")
    p.add_argument("folder", help="the folder of the plate's images")
    p.add_argument(
        "--pattern",
        default="auto",
        help="auto (default), well_field (A01_s1.tif), imagexpress (<plate>_A01_s1_w1.tif), "
        "operetta (r01c01f01p01-ch1sk1fk1fl1.tiff) or a pattern such as "
        '"{well}_{field}.tif" (fields: well, row, col, field, channel, plane, time, plate, any)',
    )
    p.add_argument("--list", action="store_true", help="list every field and its files")
    p.set_defaults(func=cmd_plate)

    p = sub.add_parser("demo", help="open napari with the Segment widget on a sample image")
    p.add_argument(
        "--sample",
        default="synthetic",
        help="'synthetic' (a generated phase-contrast culture, default), 'cell' "
        "(scikit-image's real phase-contrast image: one rounded floating cell, high magnification, "
        "which phase-cells, trained on adherent cells, does not find), 'tumour' (a synthetic "
        "culture on vessels, six classes), 'spheroid' (a synthetic bright-field well) or an "
        "image path; each sample selects the model that fits it",
    )
    p.add_argument("--model", default=None, help="model to select (default: the sample's)")
    p.add_argument(
        "--screenshot", default=None, help="segment, save a window screenshot here, exit"
    )
    p.set_defaults(func=cmd_demo)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # our errors say what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
