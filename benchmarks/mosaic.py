"""A 20000² whole-well mosaic segmented block by block: peak memory, time, agreement.

    python benchmarks/mosaic.py [--side 20000] [--model phase-cells] [--threads 1]
    python benchmarks/mosaic.py --add "--block 2048 --format ome-zarr"

A real Usiigaci field (set02, 1022x1024, 16-bit scaled to 8 bits) is repeated
into a tiled ``side``² TIFF (written tile by tile, never whole in memory), and
``cultureseg segment --table`` runs on it in a fresh process under
``/usr/bin/time -v``: peak resident memory and seconds. The baseline, in the same
run: an 8000² mosaic of the same field segmented in memory (``--block 0``; the
path of every image up to 6144²) and block by block (``--block 2048``, its default
since): block-by-block memory should not grow with the mosaic.

Agreement, on a crop of about 2000² (a multiple of the zoom's denominator, so the
whole crop's grid is exact): block by block (512-px blocks, so seams run through it)
against the whole crop in memory, with the same zoom and normalisation levels and the
same tiles (bit for bit: 0 pixels and every object identical); beside it, the whole
crop with the field path's own grown tile and with a 640 tile, the scale by which any
change of tiling moves a segmentation (``--agreement`` recomputes only this).
Results: ``benchmarks/results/mosaic.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN = "import sys; from napari_cultureseg.cli import main; sys.exit(main(sys.argv[1:]))"
FIELD = ROOT.parent / "shared" / "data" / "phase_usiigaci" / "set02_image.tif"


def field8() -> np.ndarray:
    from napari_cultureseg.core.images import read_image

    f = read_image(FIELD).astype(np.float32)  # 16-bit: 255 * uint16 would wrap around
    lo, hi = np.percentile(f, (0.1, 99.9))
    return (255 * np.clip((f - lo) / (hi - lo), 0, 1)).astype(np.uint8)


def write_mosaic(path: Path, side: int, tile: int = 512) -> None:
    """The field repeated into a side² tiled TIFF, one band of tiles at a time."""
    import tifffile

    f = field8()
    fh, fw = f.shape

    def tiles():
        for y in range(0, side, tile):
            rows = np.arange(y, y + tile) % fh
            band = f[rows]
            for x in range(0, side, tile):
                yield band[:, np.arange(x, x + tile) % fw]

    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(tile, tile))


def run(image: Path, out: Path, model: str, threads: int, extra=()) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", RUN, "segment"]
    cmd += [str(image), "--out", str(out), "--model", model, "--threads", str(threads)]
    cmd += ["--table", "--quiet", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    rec = {}
    recs = list((out / ".cultureseg-fields").glob("*.json"))
    if recs:
        rec = json.loads(recs[0].read_text())
    counted = {}
    for row in rec.get("rows", []):
        counted[row["class"]] = counted.get(row["class"], 0) + 1
    return {
        "image": image.name,
        "how": " ".join(extra) or "default",
        "exit_code": r.returncode,
        "peak_rss_gb": round(int(m.group(1)) / 1024**2, 3) if m else None,
        "seconds": round(seconds, 1),
        "summary": rec.get("summary", ""),
        "objects": counted,
        "error": r.stderr[-600:] if r.returncode else "",
    }


def crop_agreement(model: str, side: int = 2000, block: int = 512) -> dict:
    """Block by block against the whole crop in memory, same zoom and levels: with the same
    tiles (what the blocks are cut into: bit for bit), with the field path's own grown tile,
    and with a 640 tile (how much any tiling change moves a mask)."""
    from napari_cultureseg.core import object_metrics as OM
    from napari_cultureseg.core.bundles import load_bundle
    from napari_cultureseg.core.mosaic import lazy_plane, mosaic_levels, segment_mosaic
    from napari_cultureseg.core.mosaic_grid import mosaic_grid
    from napari_cultureseg.core.scale import choose_zoom
    from napari_cultureseg.core.segment import segment
    from napari_cultureseg.core.tiling import run_to_end

    bundle = load_bundle(model)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crop.tif"
        write_mosaic(path, 1024, tile=256)
        zoom, how = choose_zoom(bundle, np.asarray(lazy_plane(path)[:]), device="cpu")
        grid = mosaic_grid(bundle, zoom)  # as the blocks take it
        write_mosaic(path, side - side % grid.q, tile=256)  # sides on whole network pixels
        source = lazy_plane(path)
        img = np.asarray(source[:])
        levels = mosaic_levels(source, bundle.config.input, grid.zoom, block)
        res = segment_mosaic(bundle, source, Path(tmp) / "w", zoom=zoom, block=block, device="cpu")

        def whole(**kw):
            return run_to_end(
                segment(bundle, img, device="cpu", zoom=grid.zoom, levels=levels, **kw)
            )

        refs = {
            "same_tiles": whole(tile=grid.tile, fit=False),
            "grown_tile": whole(),
            "tile640": whole(tile=640, fit=False),
        }
        for c in bundle.config.classes:
            mb = np.asarray(res.masks[c.name][:]) > 0
            lb = np.asarray(res.objects[c.name][:]) if c.instances else None
            row = {}
            for what, ref in refs.items():
                m0 = ref.masks()[c.name]
                row[f"blocks_vs_{what}_mask_pixels_differing"] = int(np.count_nonzero(mb != m0))
                row[f"blocks_vs_{what}_mask_disagreement"] = float(np.mean(mb != m0))
                if lb is not None:
                    l0 = ref.instances(c.name, m0)
                    pairs = np.unique(np.stack([l0.ravel(), lb.ravel()]), axis=1)
                    row[f"objects_{what}"] = int(l0.max())
                    row[f"blocks_vs_{what}_identical_objects"] = int(
                        sum(
                            1
                            for a, b in pairs.T
                            if a and b and (pairs[0] == a).sum() == 1 and (pairs[1] == b).sum() == 1
                        )
                    )
                    row[f"blocks_vs_{what}_object_f1"] = round(OM.object_prf(lb, l0, 0.5)[2], 4)
            if lb is not None:
                row["objects_blocks"] = int(lb.max())
            out[c.name] = row
        out["side"] = int(img.shape[0])
        out["zoom"] = f"{grid.p}/{grid.q}"
        out["tile"] = grid.tile
        out["how"] = how
    return out


def ratios(runs: list[dict]) -> dict:
    """Each run's peak memory over the first run's (the in-memory baseline)."""
    base = runs[0]["peak_rss_gb"]
    return {
        r["image"] + " " + r["how"]: round(r["peak_rss_gb"] / base, 2)
        for r in runs
        if base and r["peak_rss_gb"]
    }


def add_runs(args) -> int:
    """Runs of the baseline-side mosaic with other options, added to the stored results."""
    result = json.loads(Path(args.out).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = tmp / f"mosaic{args.baseline_side}.tif"
        write_mosaic(small, args.baseline_side)
        for k, options in enumerate(args.add):
            extra = tuple(options.split())
            r = run(small, tmp / f"out-add{k}", args.model, args.threads, extra)
            print(json.dumps(r), flush=True)
            same = (r["image"], r["how"])
            result["runs"] = [o for o in result["runs"] if (o["image"], o["how"]) != same] + [r]
    result["ratio_to_in_memory_baseline"] = ratios(result["runs"])
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=20000)
    ap.add_argument("--baseline-side", type=int, default=8000)
    ap.add_argument("--model", default="phase-cells")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mosaic.json"))
    ap.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="OPTIONS",
        help='only segment the baseline-side mosaic with these options (e.g. "--block 2048 '
        '--format ome-zarr") and add the run to the results file',
    )
    ap.add_argument(
        "--agreement",
        action="store_true",
        help="only recompute the crop agreement and store it in the results file",
    )
    args = ap.parse_args(argv)
    if args.agreement:
        result = json.loads(Path(args.out).read_text())
        result["crop_2000_agreement"] = crop_agreement(args.model)
        print(json.dumps(result["crop_2000_agreement"]), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    if args.add:
        return add_runs(args)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = tmp / f"mosaic{args.baseline_side}.tif"
        write_mosaic(small, args.baseline_side)
        for extra in (("--block", "0"), ("--block", "2048")):
            runs.append(run(small, tmp / f"out-small{len(extra)}", args.model, args.threads, extra))
            print(json.dumps(runs[-1]), flush=True)
        small.unlink()
        big = tmp / f"mosaic{args.side}.tif"
        write_mosaic(big, args.side)
        runs.append(run(big, tmp / "out-big", args.model, args.threads))
        print(json.dumps(runs[-1]), flush=True)
    agreement = crop_agreement(args.model)
    print(json.dumps(agreement), flush=True)
    result = {
        "images": f"uint8 mosaics of {FIELD.name} repeated, tiled TIFF",
        "model": args.model,
        "threads": args.threads,
        "runs": runs,
        "ratio_to_in_memory_baseline": ratios(runs),
        "crop_2000_agreement": agreement,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
