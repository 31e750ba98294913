"""Synthetic bright-field co-cultures from the aiSEGcell mono-cultures (DeepMuCS-Generation).

    python benchmarks/coculture_generate.py [--train 40] [--test 12] [--out /tmp/coculture]

Each aiSEGcell experiment in ``shared/data/brightfield_aisegcell/nucleus_cell`` holds one
sorted mouse blood cell type (``CellType`` column of ``fig2/b/fig2b.csv`` in the aiSEGcell
supplement, repo ``bethcg/aiSEGcell``; pixel sizes from its ``suppl_fig10`` script):

    181024TK20  megakaryocyte progenitors (MkP)   20x, 0.62 µm/px
    200313SK20  macrophages                        20x, 0.62 µm/px
    200925SK30  pre-osteoclasts                    30x, 0.34 µm/px (shrunk to 0.62)
    210930MA20  granulocyte-monocyte progenitors   20x, 0.62 µm/px

so four true cell types in one modality, each from one experiment (cell type and imaging
session go together: a model may learn either). Usiigaci's phase-contrast set holds one
cell line, so it makes no co-culture, and modalities are never mixed.

Writes the train/test sets (test positions never used for training) to ``--out``, the
figure ``docs/images/coculture_generated.jpg`` (a generated co-culture, plain and with
instance outlines coloured by type, beside a real field of each type), and prints
per-type instance counts and sizes and seconds per generated image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brightfield_aisegcell" / "nucleus_cell"
FIGURE = ROOT / "docs" / "images" / "coculture_generated.jpg"
SOURCES = [  # (type, experiment, µm per px, colour)
    ("MkP", "181024TK20", 0.62, (255, 70, 70)),
    ("macrophage", "200313SK20", 0.62, (60, 230, 60)),
    ("preosteoclast", "200925SK30", 0.34, (70, 150, 255)),
    ("GMP", "210930MA20", 0.62, (255, 210, 30)),
]
COLOURS = {t: c for t, _, _, c in SOURCES}


def gray(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    g = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, -1)


def outlined(image, labels, colour_of) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    rgb, edge = gray(image), find_boundaries(labels, mode="inner")
    lut = np.zeros((int(labels.max()) + 1, 3), np.uint8)
    for i in range(1, len(lut)):
        lut[i] = colour_of(i)
    rgb[edge] = lut[labels[edge]]
    return rgb


def diversity(cc, win) -> int:
    """How many types, then how many cells, a window of a co-culture shows."""
    ids = np.unique(cc.labels[win])
    return 1000 * len({cc.types[i] for i in ids if i}) + len(ids)


def busiest(labels, side: int, cc=None) -> tuple[slice, slice]:
    """The ``side``² window (coarse grid) with the most cells (most types first, given ``cc``)."""
    h, w = labels.shape
    best, where = -1, (0, 0)
    for y in range(0, max(h - side, 0) + 1, side // 4):
        for x in range(0, max(w - side, 0) + 1, side // 4):
            win = (slice(y, y + side), slice(x, x + side))
            s = diversity(cc, win) if cc else len(np.unique(labels[win]))
            if s > best:
                best, where = s, (y, x)
    return slice(where[0], where[0] + side), slice(where[1], where[1] + side)


def figure(cc, real, path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    win = busiest(cc.labels, 640, cc)
    top = [
        gray(cc.image[win]),
        outlined(cc.image[win], cc.labels[win], lambda i: COLOURS[cc.types[i]]),
    ]
    bottom = []
    for t, (img, lab) in real.items():
        w = busiest(lab, 320)
        bottom.append(outlined(img[w], lab[w], lambda i, t=t: COLOURS[t]))
    pad, head = 8, 26
    width = 2 * 640 + pad
    canvas = Image.new("RGB", (width, head + 640 + pad + head + 320), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=17)
    for k, (panel, text) in enumerate(
        zip(top, ("generated co-culture", "its instances, by type"), strict=True)
    ):
        canvas.paste(Image.fromarray(panel), (k * (640 + pad), head))
        draw.text((k * (640 + pad) + 4, 4), text, fill=(0, 0, 0), font=font)
    y = head + 640 + pad
    step = (width - 3 * pad) // 4
    for k, (panel, t) in enumerate(zip(bottom, real, strict=True)):
        x = k * (step + pad)
        canvas.paste(Image.fromarray(panel[:, :step]), (x, y + head))
        draw.text((x + 4, y + 4), f"real {t}", fill=COLOURS[t], font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=40, help="training co-cultures to write")
    ap.add_argument("--test", type=int, default=12, help="test co-cultures to write")
    ap.add_argument("--out", type=Path, default=Path("/tmp/coculture_generated"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing", type=int, default=20, help="images generated for the timing")
    ap.add_argument("--figure", type=Path, default=FIGURE)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"needs the public data folder {DATA}", file=sys.stderr)
        return 2
    from scipy import ndimage as ndi

    from napari_cultureseg.core.synth import coculture as sc
    from napari_cultureseg.core.synth import coculture_sources as cs

    t0 = time.perf_counter()
    sources = [
        cs.source_from_folder(DATA, name=t, prefix=exp, pixel_size=px) for t, exp, px, _ in SOURCES
    ]
    print(f"read {sum(len(s.fields) for s in sources)} fields in {time.perf_counter() - t0:.1f} s")
    train, test = cs.split_sources(sources, seed=args.seed)
    for s_tr, s_te in zip(train, test, strict=True):
        tr, te = sorted({f.group for f in s_tr.fields}), sorted({f.group for f in s_te.fields})
        print(f"  {s_tr.name:14s} train {tr}  test {te}")

    t0 = time.perf_counter()
    lib = cs.build_library(train, seed=args.seed)
    n_fields = sum(len(s.fields) for s in train)
    dt = time.perf_counter() - t0
    print(f"library of {n_fields} training fields: {dt:.1f} s ({dt / n_fields:.2f} s per field)")
    for t in lib.types:
        lo, hi = lib.areas[t]
        print(f"  {t:14s} {len(lib.cells[t]):4d} cells, {lo}-{hi} px, {lib.density[t]:.0f}/Mpx")

    times, per_type = [], {t: [] for t in lib.types}
    for i in range(args.timing):
        t0 = time.perf_counter()
        cc = sc.generate_coculture(lib, seed=args.seed * 1000 + i)
        times.append(time.perf_counter() - t0)
        sizes = np.bincount(cc.labels.ravel())
        for k, t in cc.types.items():
            per_type[t].append(int(sizes[k]))
    um2 = lib.pixel_size**2
    mean, med = np.mean(times), np.median(times)
    print(f"{args.timing} co-cultures: {mean:.3f} s per image (median {med:.3f})")
    for t, a in per_type.items():
        a = np.array(a)
        print(
            f"  {t:14s} {len(a):4d} instances ({len(a) / args.timing:.1f} per image), area median "
            f"{np.median(a):.0f} px = {np.median(a) * um2:.0f} µm², 5-95% {np.percentile(a, 5):.0f}"
            f"-{np.percentile(a, 95):.0f} px"
        )

    real = {}
    for src in train:  # one real field per type, at the library's pixel size
        f = max(src.fields, key=lambda f: len(np.unique(f.labels)))
        z = src.pixel_size / lib.pixel_size
        img = ndi.zoom(f.image.astype(np.float32), z, order=1, grid_mode=True, mode="nearest")
        lab = ndi.zoom(f.labels, z, order=0, grid_mode=True, mode="nearest")
        real[src.name] = (img, lab)
    # the figure: a crowded one (twice the sources' density) with every type in view
    crowded = [sc.generate_coculture(lib, seed=10_000 + i, density=2.0) for i in range(6)]
    figure(max(crowded, key=lambda c: diversity(c, busiest(c.labels, 640, c))), real, args.figure)
    print(f"figure: {args.figure}")

    t0 = time.perf_counter()
    manifest = sc.write_dataset(
        sources, args.out, n_train=args.train, n_test=args.test, seed=args.seed
    )
    dt = time.perf_counter() - t0
    n = args.train + args.test
    print(f"wrote {n} co-cultures to {args.out} in {dt:.1f} s (libraries included)")
    tr, te = set(manifest["train"]["fields"]), set(manifest["test"]["fields"])
    print(f"  fields used: train {len(tr)}, test {len(te)}, shared {len(tr & te)}")
    summary = {"seconds_per_image": float(np.mean(times)), "types": list(lib.types)}
    (args.out / "benchmark.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
