"""Are the reference nuclei of a field shifted as a whole against what the model draws?

    python benchmarks/nucleus_shift.py [--model brightfield-nucleus-cell]
        [--data ../shared/data/brightfield_aisegcell/nucleus_cell] [--radius 8]

aiSEGcell's reference nuclei come from a fluorescent marker imaged beside the bright
field. A fluorescence channel registered a few pixels off would shift every nucleus of
a field the same way; nuclei that moved between the two exposures are off each on its
own. Every annotated field is segmented once (object size auto, as ``cultureseg
evaluate``), and the model's nucleus mask is compared with the reference shifted by
up to ``radius`` px each way: the shift with the best Dice, and that Dice beside the
unshifted one, per field, go to ``benchmarks/results/nucleus_shift.json``. A diagnosis:
it chooses nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best_shift(pred, ref, radius: int) -> tuple[tuple[int, int], float, float]:
    """The shift ``(dy, dx)`` of ``ref`` that matches ``pred`` best, its Dice and the
    Dice unshifted (both on the frame ``radius`` px inside the image)."""
    h, w = ref.shape
    a = pred[radius : h - radius, radius : w - radius]
    scores = {}
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r = ref[radius + dy : h - radius + dy, radius + dx : w - radius + dx]
            scores[(dy, dx)] = 2 * (a & r).sum() / max(1, a.sum() + r.sum())
    shift = max(scores, key=scores.get)
    return shift, float(scores[shift]), float(scores[(0, 0)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="brightfield-nucleus-cell")
    ap.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/brightfield_aisegcell/nucleus_cell")
    )
    ap.add_argument("--radius", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nucleus_shift.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from _results import bundle_of, merge_result

    from napari_cultureseg.core.evaluate import truth_from_folder
    from napari_cultureseg.core.scale import choose_zoom
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    bundle = bundle_of(args.model)
    fields = {}
    for t in truth_from_folder(args.data, ["nucleus"]):
        if "nucleus" not in t.masks:
            continue
        zoom, _ = choose_zoom(bundle, t.image)
        pred = run_to_end(segment(bundle, t.image, zoom=zoom)).masks()["nucleus"]
        (dy, dx), best, unshifted = best_shift(pred > 0, t.masks["nucleus"] > 0, args.radius)
        fields[t.name] = {
            "zoom": round(zoom, 3),
            "dice_unshifted": round(unshifted, 4),
            "best_shift_px": [dy, dx],
            "dice_best": round(best, 4),
        }
        print(t.name, fields[t.name], flush=True)
    largest = max(max(abs(v) for v in f["best_shift_px"]) for f in fields.values())
    gain = max(f["dice_best"] - f["dice_unshifted"] for f in fields.values())
    merge_result(
        args.out,
        str(args.model),
        {
            "command": "python benchmarks/nucleus_shift.py --model " + str(args.model),
            "radius_px": args.radius,
            "fields": fields,
            "largest_best_shift_px": largest,
            "largest_dice_gain": round(gain, 4),
        },
    )
    print(f"largest best shift {largest} px, largest Dice gain {gain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
