"""Peak memory of `cultureseg segment` on a whole-well mosaic, against an earlier release.

    python benchmarks/memory.py [--side 8000] [--model phase-cells] [--threads 2]

A real Usiigaci field (set02, 1022x1024, 16-bit scaled to 8 bits) is repeated
into a ``side``² mosaic, and ``cultureseg segment`` runs on it in a fresh
process, three times: as shipped (objects labelled tile by tile,
``postprocess.TILED_ABOVE``), with that tiling switched off, and with the code of
an earlier release (``--baseline``, a commit: the ratio's baseline). Peak
resident memory comes from ``/usr/bin/time -v``. Then, on a 2000² crop, the shipped tiled labelling
(forced, 512-px cores) is compared with the untiled one on the same
probabilities: masks must be equal and objects the same.
Results: ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELD = ROOT.parent / "shared" / "data" / "phase_usiigaci" / "set02_image.tif"
RUN = """
import sys
from napari_cultureseg.core import postprocess
if sys.argv[1] == "untiled":
    postprocess.TILED_ABOVE = 1 << 62
from napari_cultureseg.cli import main
sys.exit(main(sys.argv[2:]))
"""


def peak_rss(
    variant: str, image: Path, out: Path, model: str, threads: int, src: Path | None = None
) -> dict:
    """Peak RSS of one ``cultureseg segment`` run; ``src``: another checkout's package.

    This release's runs keep the plane in memory (``--block 0``): block by block is the
    default above 6144² since, measured in ``mosaic.py``; the earlier release has no
    ``--block`` and always kept it in memory."""
    mode = "untiled" if variant == "untiled" else "tiled"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", RUN, mode, "segment", str(image)]
    cmd += ["--out", str(out), "--model", model, "--threads", str(threads), "--quiet"]
    cmd += [] if src else ["--block", "0"]
    env = dict(os.environ, PYTHONPATH=str(src)) if src else None
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return {
        "variant": variant,
        "exit_code": r.returncode,
        "peak_rss_gb": round(int(m.group(1)) / 1024**2, 3) if m else None,
        "seconds": round(seconds, 1),
        "error": r.stderr[-600:] if r.returncode else "",
    }


def crop_agreement(model: str, side: int = 2000) -> dict:
    import numpy as np

    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.images import read_image
    from napari_cultureseg.core.postprocess import instances
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    field = read_image(FIELD)
    reps = -(-side // min(field.shape[:2]))
    img = np.tile(field, (reps, reps))[:side, :side]
    bundle = load_bundle(model)
    seg = run_to_end(segment(bundle, img, device="cpu", zoom=1.0))
    out = {}
    for spec in seg.classes:
        if not spec.instances:
            continue
        mask = seg.masks()[spec.name]
        whole = seg.instances(spec.name, mask)  # untiled: 2000² is below the limit
        base = dict(
            min_size=seg._min_size(spec),
            method=spec.separate,
            h=spec.split_depth,
            seed_threshold=getattr(spec, "seed_threshold", 0.5),
        )
        from napari_cultureseg.core.bundle_config import distance_channels

        k = distance_channels(seg.classes).get(spec.name)
        dist = None if k is None else seg.probability(k)
        tiled = instances(mask, tile=512, halo=256, distance=dist, **base)
        untiled = instances(mask, tile=0, distance=dist, **base)
        same_objects = 0
        for lab in range(1, int(untiled.max()) + 1):
            obj = untiled == lab
            best = np.bincount(tiled[obj]).argmax()
            if best and (obj == (tiled == best)).all():
                same_objects += 1
        out[spec.name] = {
            "masks_equal": bool(((tiled > 0) == mask).all() and ((whole > 0) == mask).all()),
            "objects_untiled": int(untiled.max()),
            "objects_tiled": int(tiled.max()),
            "objects_identical": same_objects,
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=8000)
    ap.add_argument("--model", default="phase-cells")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    ap.add_argument(
        "--baseline",
        default="6db9e51",
        help="commit whose code is the baseline (a git worktree of it is made and removed)",
    )
    args = ap.parse_args(argv)

    import numpy as np
    import tifffile

    from napari_cultureseg.core.images import read_image

    field = read_image(FIELD).astype(np.float32)  # 16-bit: 255 * uint16 would wrap around
    lo, hi = np.percentile(field, (0.1, 99.9))
    field = (255 * np.clip((field - lo) / (hi - lo), 0, 1)).astype(np.uint8)
    reps = -(-args.side // min(field.shape[:2]))
    mosaic = np.tile(field, (reps, reps))[: args.side, : args.side]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "mosaic.tif"
        tifffile.imwrite(image, mosaic)
        for variant in ("tiled", "untiled"):
            runs.append(peak_rss(variant, image, Path(tmp) / variant, args.model, args.threads))
            print(json.dumps(runs[-1]), flush=True)
        if args.baseline:  # the same command with an earlier release's code
            tree = Path(tmp) / "baseline"
            git = ["git", "-C", str(ROOT)]
            add = [*git, "worktree", "add", "--detach", str(tree), args.baseline]
            subprocess.run(add, check=True)
            try:
                base = peak_rss(
                    f"release {args.baseline}",
                    image,
                    Path(tmp) / "base",
                    args.model,
                    args.threads,
                    tree / "src",
                )
            finally:
                subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)
            runs.append(base)
            print(json.dumps(base), flush=True)
    agreement = crop_agreement(args.model)
    print(json.dumps(agreement), flush=True)
    result = {
        "image": f"{args.side}x{args.side} uint8 mosaic of {FIELD.name}",
        "model": args.model,
        "threads": args.threads,
        "runs": runs,
        "ratio_untiled_to_tiled": (
            round(runs[1]["peak_rss_gb"] / runs[0]["peak_rss_gb"], 2)
            if runs[0]["peak_rss_gb"] and runs[1]["peak_rss_gb"]
            else None
        ),
        "ratio_baseline_to_tiled": (
            round(runs[2]["peak_rss_gb"] / runs[0]["peak_rss_gb"], 2)
            if len(runs) > 2 and runs[0]["peak_rss_gb"] and runs[2]["peak_rss_gb"]
            else None
        ),
        "crop_2000": agreement,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
