"""Regenerate the small sample images in this folder from the project's own generator.

    python sample_data/make_samples.py

synthetic_culture.tif        256×256 uint16 synthetic phase-contrast culture (seed 0)
synthetic_culture_cell.tif   its exact cell instances (uint16, 0 = background)
"""

from pathlib import Path

import tifffile

from napari_cultureseg.core.synth import phase_culture

HERE = Path(__file__).parent

if __name__ == "__main__":
    image, labels = phase_culture((256, 256), seed=0, n_cells=14)
    tifffile.imwrite(HERE / "synthetic_culture.tif", image, compression="zlib")
    tifffile.imwrite(HERE / "synthetic_culture_cell.tif", labels, compression="zlib")
    print("wrote", *sorted(p.name for p in HERE.glob("*.tif")))
