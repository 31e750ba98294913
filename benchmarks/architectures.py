"""Table 1 of the MIDL 2019 study of nuclei and cytoplasm from bright field, for our data:
U-Net, Tiramisu and DeepLabV3+, same recipe, same training time.

    python benchmarks/architectures.py [--seconds 2400] [--threads 1]
        [--archs unet,tiramisu,deeplabv3+] [--out benchmarks/results/architectures.json]

Each architecture is trained from ``configs/brightfield-nucleus-cell.yaml`` with
only ``architecture`` and ``params`` changed (``ARCHS``) and the same time
budget, on the recipe's own train/validation split (validation picks the kept
weights); it is then scored once on the recipe's test images, which no choice
saw: Dice of nucleus, cell and cytoplasm (cell minus nucleus, the MIDL 2019 study's
third class), nucleus object F1 and SA(0.5), its parameters, and seconds per 1024²
field on this CPU (``--threads``, after a warm-up pass). Whether a winner replaces
the shipped model is decided on a new experiment instead (``benchmarks/loeo.py
--variant <arch> --set architecture=<arch> --set params=...``), not here.

The test fields are resampled to the training object size that their own nucleus
masks give (``--diameter truth``, the default): the table compares networks, not
the size estimate, which is the same code for all three and costs a dozen
forward passes per field (``--diameter auto`` measures it too).

Bundles are cached in ``benchmarks/results/cache/architectures/<arch>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
CONFIG = ROOT / "configs" / "brightfield-nucleus-cell.yaml"
CACHE = ROOT / "benchmarks" / "results" / "cache" / "architectures"
DATA = ROOT.parent / "shared" / "data" / "brightfield_aisegcell" / "nucleus_cell"

ARCHS = {
    # the shipped recipe's network
    "unet": None,
    # FC-DenseNet103 as Jégou et al. 2017 and the MIDL 2019 study use it
    "tiramisu": {"first": 48, "down": [4, 5, 7, 10, 12], "bottleneck": 15, "growth": 16},
    # smp's DeepLabV3+ on the same encoder as the U-Net
    "deeplabv3+": {"encoder": "resnet18", "encoder_output_stride": 16},
}


def train(arch: str, seconds: float, threads: int, cache: Path = CACHE) -> Path:
    from loeo import patched_recipe

    from napari_cultureseg.core.training import train_from_config

    out = cache / arch
    if (out / "config.json").is_file():
        return out
    sets = [f"training.max_seconds={seconds}", "bundle=false"]
    if ARCHS[arch] is not None:
        sets += [f"architecture={arch}", f"params={json.dumps(ARCHS[arch])}"]
    recipe = patched_recipe(CONFIG, sets)
    try:
        saved = train_from_config(recipe, out_dir=cache / f".{arch}", threads=threads)
    finally:
        if recipe != CONFIG:
            recipe.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    saved.rename(out)
    return out


def seconds_per_field(bundle, threads: int) -> float:
    import numpy as np
    import torch

    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    torch.set_num_threads(threads)
    image = np.random.default_rng(0).integers(0, 255, (1024, 1024)).astype(np.uint8)
    run_to_end(segment(bundle, image, device="cpu"))  # warm-up
    t0 = time.perf_counter()
    run_to_end(segment(bundle, image, device="cpu"))
    return round(time.perf_counter() - t0, 2)


def main(argv=None) -> int:
    from _results import merge_result

    from napari_cultureseg.core.bundles import Bundle
    from napari_cultureseg.core.evaluate import evaluate, truth_from_folder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "architectures.json"))
    ap.add_argument("--cache", default=str(CACHE), help="where the trained bundles are kept")
    ap.add_argument(
        "--diameter",
        default="truth",
        choices=["truth", "auto"],
        help="test fields at the object size of their own masks, or estimated",
    )
    args = ap.parse_args(argv)
    for arch in args.archs.split(","):
        if arch not in ARCHS:
            raise SystemExit(f"unknown architecture {arch!r}; one of {', '.join(ARCHS)}")
        path = train(arch, args.seconds, args.threads, Path(args.cache))
        bundle = Bundle.load(path)
        ids = set(bundle.config.card["test_ids"])
        truths = truth_from_folder(DATA, bundle.config.class_names, only=ids)
        for t in truths:  # the study's third class, scored in the same pass as the others
            if "cell" in t.masks and "nucleus" in t.masks:
                t.masks["cytoplasm"] = (t.masks["cell"] > 0) & ~(t.masks["nucleus"] > 0)
        scored = evaluate(bundle, truths, device="cpu", diameter=args.diameter)
        r = scored["classes"]
        net = bundle.build()
        row = {
            "architecture": arch,
            "params": ARCHS[arch] or bundle.config.params,
            "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
            "steps": bundle.config.lineage.get("steps"),
            "training_seconds": bundle.config.lineage.get("seconds"),
            "test_images": len(truths),
            "nucleus_dice": r["nucleus"]["dice"],
            "cell_dice": r["cell"]["dice"],
            "cytoplasm_dice": r["cytoplasm"]["dice"],
            "diameter": args.diameter,
            "nucleus_object_f1": r["nucleus"].get("object_f1"),
            "nucleus_sa_0.5": r["nucleus"].get("sa_0.5"),
            "seconds_per_1024": seconds_per_field(bundle, args.threads),
            "threads": args.threads,
        }
        print(json.dumps(row), flush=True)
        merge_result(args.out, arch, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
