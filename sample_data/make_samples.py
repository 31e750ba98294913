"""Regenerate the small sample images in this folder from the project's own generator.

    python sample_data/make_samples.py

synthetic_culture.tif        256×256 uint16 synthetic phase-contrast culture (seed 0)
synthetic_culture_cell.tif   its exact cell instances (uint16, 0 = background)
tumour_culture.png           348×260 8-bit RGB culture on vessels in seed 000's look (seed 0)
tumour_culture_<C>.tif       its six exact class masks (uint8 0/1), C in S, I, IP, P, O, R
spheroid_well.png            270×270 8-bit bright-field spheroid well in seed 003's look
spheroid_well_spheroid.tif   its exact mask (uint8 0/1)
"""

from pathlib import Path

import imageio.v3 as iio
import tifffile

from napari_cultureseg.core.synth import phase_culture
from napari_cultureseg.core.synth.culture import CLASS_NAMES, culture
from napari_cultureseg.core.synth.spheroid import spheroid_well

HERE = Path(__file__).parent


def main(out: Path = HERE) -> None:
    """Write every sample and its truth to ``out``."""
    image, labels = phase_culture((256, 256), seed=0, n_cells=14)
    tifffile.imwrite(out / "synthetic_culture.tif", image, compression="zlib")
    tifffile.imwrite(out / "synthetic_culture_cell.tif", labels, compression="zlib")
    image, masks = culture((260, 348), seed=0, rgb=True)
    iio.imwrite(out / "tumour_culture.png", image)
    for name in CLASS_NAMES:
        tifffile.imwrite(
            out / f"tumour_culture_{name}.tif", masks[name].astype("uint8"), compression="zlib"
        )
    image, mask = spheroid_well(270, seed=0, difficulty="easy")
    iio.imwrite(out / "spheroid_well.png", image)
    tifffile.imwrite(out / "spheroid_well_spheroid.tif", mask.astype("uint8"), compression="zlib")
    print("wrote", *sorted(p.name for p in out.glob("*.[pt][ni][gf]")))


if __name__ == "__main__":
    main()
