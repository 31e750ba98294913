"""How much larger a model draws its objects than the truth, on its validation images.

    python benchmarks/scale_bias.py --config configs/phase-cells.yaml [--write]

Training measures this itself at its end (``Validation.sizes``, stored as
``ScaleSpec.bias``); this script measures it the same way for a model trained
before that existed: the recipe's validation images at the training scale, the
bundled model's objects against the true ones (geometric mean over images of
the ratio of median diameters). ``--write`` stores it in the bundled model.
Results: ``benchmarks/results/scale_bias.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    from _results import merge_result

    from napari_cultureseg.core.bundles import Bundle, bundled_dir
    from napari_cultureseg.core.training.recipes import prepare_from_config
    from napari_cultureseg.core.training.validation import score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", help="a bundle folder (default: the recipe's bundled model)")
    ap.add_argument("--write", action="store_true", help="store the ratio in the model")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale_bias.json"))
    args = ap.parse_args(argv)
    recipe = prepare_from_config(args.config)
    path = Path(args.model) if args.model else bundled_dir() / recipe.model.name
    bundle = Bundle.load(path)
    ids = set(bundle.config.card.get("validation_ids", []))
    val = [s for s in recipe.val if s.name in ids]
    if {s.name for s in val} != ids:
        raise SystemExit("the recipe's validation images are not the model's: retrain it")
    cfg = bundle.config
    v = score(bundle.network("cpu"), val, cfg, tile=cfg.tile, device="cpu", objects=True)
    ratio = v.sizes.get(cfg.scale.reference)
    print(f"{cfg.name}: {cfg.scale.reference} drawn x{ratio} (validation, {len(val)} images)")
    entry = {
        "reference": cfg.scale.reference,
        "size_ratio": ratio,
        "validation_images": len(val),
        "val_sa_0.5": v.objects,
    }
    merge_result(args.out, cfg.name if not args.model else str(path), entry)
    if args.write and ratio:
        new = replace(cfg.scale, bias=float(ratio))
        bundle.with_config(scale=new).save(path, overwrite=True)
        print(f"stored in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
