"""npe2 sample data: a real phase-contrast image and a synthetic culture with its truth."""

from __future__ import annotations


def phase_cells():
    """scikit-image's ``cell``: a real phase-contrast image shipped with the package."""
    from skimage import data

    return [(data.cell(), {"name": "cell"}, "image")]


def synthetic_culture():
    """A synthetic phase-contrast culture (seed 0) and its exact cell instances."""
    from .core.synth import phase_culture

    image, labels = phase_culture((512, 512), seed=0)
    return [
        (image, {"name": "synthetic culture"}, "image"),
        (labels, {"name": "synthetic culture · truth", "visible": False}, "labels"),
    ]
