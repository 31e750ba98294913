"""npe2 sample data: a real phase-contrast image and synthetic images with their exact truth.

The synthetic ones are generated on request (seeded, a second or two), not stored.
"""

from __future__ import annotations


def phase_cells():
    """scikit-image's ``cell``: a real phase-contrast image shipped with scikit-image, one
    rounded cell floating in saline at high magnification. ``phase-cells`` learnt adherent,
    spread cells and finds none here (a field to correct by hand and fine-tune on)."""
    from skimage import data

    return [(data.cell(), {"name": "cell", "metadata": _model("phase-cells")}, "image")]


def _model(name: str) -> dict:
    """Layer metadata naming the bundled model that fits a sample (the Segment widget selects
    it when the sample is opened)."""
    return {"cultureseg": {"model": name}}


def synthetic_culture():
    """A synthetic phase-contrast culture (seed 0) and its exact cell instances."""
    from .core.synth import phase_culture

    image, labels = phase_culture((512, 512), seed=0)
    return [
        (image, {"name": "synthetic culture", "metadata": _model("phase-cells")}, "image"),
        (labels, {"name": "synthetic culture · truth", "visible": False}, "labels"),
    ]


def tumour_culture():
    """A seed-000-like culture on vascular structures (1040×1392, seed 0) and its six classes.

    The six exact masks (S, I, IP, P, O, R) come as overlapping Labels layers in
    the class colours of ``culture-multilabel``, hidden: the truth to compare with.
    """
    from .core.synth.culture import CLASSES, culture

    image, masks = culture(seed=0, rgb=True)
    meta = {"name": "tumour culture", "rgb": True, "metadata": _model("culture-multilabel")}
    layers = [(image, meta, "image")]
    for name, colour, _ in CLASSES:
        layers.append(
            (
                masks[name].astype("uint8"),
                {
                    "name": f"tumour culture · {name} (truth)",
                    "visible": False,
                    "opacity": 0.6,
                    "colormap": {0: None, 1: colour},
                },
                "labels",
            )
        )
    return layers


def spheroid_well():
    """A seed-003-like bright-field well with one spheroid (1080², "hard" setting) and its mask."""
    from .core.synth.spheroid import spheroid_well as well

    image, mask = well(1080, seed=0, difficulty="hard")
    return [
        (image, {"name": "spheroid well", "metadata": _model("spheroid-multiscale")}, "image"),
        (
            mask.astype("uint8"),
            {"name": "spheroid well · spheroid (truth)", "visible": False, "opacity": 0.5},
            "labels",
        ),
    ]
