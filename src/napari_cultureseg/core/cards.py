"""Model cards: ``card.md`` beside a bundle's ``config.json``, rendered from the config.

The card's facts live in ``config.json`` (``card``: data, licence, attribution,
validation ids, published figures for comparison, evaluation results;
``lineage``: training command, steps, seconds). ``card.md`` is a readable
rendering, rewritten whenever those change (``cultureseg evaluate --record``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_atomic
from .bundle_config import BundleConfig
from .bundles import CONFIG

CARD = "card.md"

_METRICS = [
    ("dice", "Dice"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("auc", "AUC"),
    ("dice_at_roc_threshold", "Dice at ROC threshold"),
    ("f_score_mean", "F-score per image (mean)"),
    ("object_precision", "object precision @IoU 0.5"),
    ("object_recall", "object recall @IoU 0.5"),
    ("object_f1", "object F1 @IoU 0.5"),
    ("sa_0.5", "SA(0.5)"),
    ("msa", "mSA (τ 0.50:0.95)"),
]


_TITLES = {
    "test": "Same experiments: test images",
    "val": "Validation images (they picked the kept weights: optimistic)",
    "all": "All images of the data set (training images included)",
}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def render_card(cfg: BundleConfig) -> str:
    """Markdown model card of a bundle config."""
    card, lin = cfg.card, cfg.lineage
    lines = [
        f"# {cfg.name}",
        "",
        cfg.description.strip(),
        "",
        f"- modality: {cfg.modality}",
        f"- architecture: `{cfg.architecture}` {json.dumps(cfg.params)}",
        f"- input: {cfg.input.channels} channel(s), normalisation {vars(cfg.input.normalisation)}"
        + (", 3×3 median" if cfg.input.median3 else "")
        + (", histogram matching" if cfg.input.histogram_reference else ""),
        f"- tiles: {cfg.tile} px, overlap {cfg.overlap}",
        *(
            [
                f"- test-time augmentation: {cfg.tta} flipped and rotated copies averaged by "
                "default (chosen on the validation images; the figures below are with them)"
            ]
            if cfg.tta != 1
            else []
        ),
        *(
            [
                f"- scale: learnt at a median {cfg.scale.reference} diameter of "
                f"{cfg.scale.diameter:g} px (all counted classes: "
                + ", ".join(f"{k} {v:g} px" for k, v in cfg.scale.diameters.items())
                + "); new images are resampled to it (object diameter given, or auto: "
                f"measured by the `{cfg.scale.estimator}` estimator)"
            ]
            if cfg.scale.diameter
            else []
        ),
        "",
        "## Classes",
        "",
    ]
    for c in cfg.classes:
        extra = f", instances by {c.separate}" if c.instances else ""
        lines.append(
            f"- **{c.name}** ({c.colour}), threshold {c.threshold}{extra}. {c.description}"
        )
    for d in cfg.derived:
        lines.append(
            f"- **{d.name}** ({d.colour}) = {d.base} − {' − '.join(d.minus)} (derived). "
            f"{d.description}"
        )
    if card.get("thresholds"):
        lines += ["", f"Thresholds: {card['thresholds']['how']}."]
    lines += ["", "## Data", ""]
    for key in ("source", "licence", "attribution"):
        if card.get(key):
            lines.append(f"- {key}: {str(card[key]).strip()}")
    if card.get("validation_ids"):
        ids = card["validation_ids"]
        lines.append(
            f"- validation split ({len(ids)} images, never trained on; they picked the kept "
            f"weights): {', '.join(ids)}"
        )
    if card.get("test_ids"):
        ids = card["test_ids"]
        lines.append(
            f"- test split ({len(ids)} images, seen by no choice: not training, not early "
            f"stopping, not thresholds or post-processing): {', '.join(ids)}"
        )
    lines += ["", "## Training", ""]
    if lin.get("steps"):
        if card.get("command"):
            lines.append(f"- command: `{card['command']}`")
        lines.append(
            f"- {lin.get('steps')} steps in {lin.get('seconds', 0) / 60:.1f} min "
            f"({card.get('trained_on', 'CPU')}), best step {lin.get('best_step')}"
        )
        data = lin.get("data")
        if isinstance(data, dict):  # the names are in config.json; the card gives the counts
            counts = ", ".join(
                f"{data[k]['count']} {k}"
                for k in ("train", "val")
                if isinstance(data.get(k), dict) and "count" in data[k]
            )
            lines.append(f"- data: {data.get('description') or ''} ({counts} images)")
        elif data:
            lines.append(f"- data: {data}")
        lines.append(f"- parent: {lin.get('parent') or 'none (trained from scratch)'}")
    else:
        lines.append("- UNTRAINED: random weights.")
    evaluations = dict(card.get("evaluations") or {})
    if card.get("evaluation") and not evaluations:  # cards written before test splits
        evaluations[card["evaluation"].get("split", "val")] = card["evaluation"]
    for split in ("test", "val", "all"):
        ev = evaluations.get(split)
        if not ev:
            continue
        lines += [
            "",
            f"## {_TITLES[split]} ({ev.get('images')} images, `{ev.get('command', '')}`)",
            "",
            "| class | " + " | ".join(label for _, label in _METRICS) + " |",
            "|---|" + "---|" * len(_METRICS),
        ]
        for name, m in ev["classes"].items():
            lines.append(
                f"| {name} | "
                + " | ".join(_fmt(m[k]) if k in m else "—" for k, _ in _METRICS)
                + " |"
            )
    if card.get("new_experiments"):
        lines += [
            "",
            "## New experiments (never seen in training)",
            "",
            str(card["new_experiments"]).strip(),
        ]
    for key, title in (
        ("benchmark", "Benchmark"),
        ("choice", "Why this model"),
        ("deviations", "Deviations from the paper"),
    ):
        if card.get(key):
            lines += ["", f"## {title}", "", str(card[key]).strip()]
    if card.get("published"):
        lines += ["", "## Published figures on comparable data", "", str(card["published"]).strip()]
    if card.get("floors"):
        lines += ["", "## Targets", "", str(card["floors"]).strip()]
    if card.get("limitations"):
        lines += ["", "## Limitations", "", str(card["limitations"]).strip()]
    return "\n".join(lines) + "\n"


def write_card(bundle_dir: str | Path) -> Path:
    """(Re)write ``card.md`` of a bundle folder from its ``config.json``."""
    bundle_dir = Path(bundle_dir)
    cfg = BundleConfig.from_dict(json.loads((bundle_dir / CONFIG).read_text()))
    text = render_card(cfg)
    return write_atomic(bundle_dir / CARD, lambda tmp: tmp.write_text(text))


def record_evaluation(bundle_dir: str | Path, result: dict) -> None:
    """Store an evaluation result in the bundle's config card (atomically); re-render the card."""
    bundle_dir = Path(bundle_dir)
    d = json.loads((bundle_dir / CONFIG).read_text())
    card = d.setdefault("card", {})
    card.setdefault("evaluations", {})[result.get("split", "all")] = result
    card.pop("evaluation", None)
    text = json.dumps(d, indent=2) + "\n"
    write_atomic(bundle_dir / CONFIG, lambda tmp: tmp.write_text(text))
    write_card(bundle_dir)


def record_thresholds(bundle_dir: str | Path, thresholds: dict[str, float], how: str) -> None:
    """Set per-class thresholds in a bundle's ``config.json`` (atomically), say how in the card.

    ``thresholds`` maps class names to new thresholds; other classes keep
    theirs. ``how`` (e.g. "max DSC on validation seeds 40-45") is stored in
    ``card["thresholds"]`` with the values, so the card shows where they came from.
    """
    bundle_dir = Path(bundle_dir)
    d = json.loads((bundle_dir / CONFIG).read_text())
    names = {c["name"] for c in d["classes"]}
    unknown = sorted(set(thresholds) - names)
    if unknown:
        raise ValueError(f"no classes {unknown} in {bundle_dir.name} (it has {sorted(names)})")
    for c in d["classes"]:
        if c["name"] in thresholds:
            t = float(thresholds[c["name"]])
            if not 0.0 < t < 1.0:
                raise ValueError(f"threshold for {c['name']} must be in (0, 1), got {t}")
            c["threshold"] = round(t, 4)
    d.setdefault("card", {})["thresholds"] = {
        "how": how,
        "values": {c["name"]: c["threshold"] for c in d["classes"]},
    }
    text = json.dumps(d, indent=2) + "\n"
    write_atomic(bundle_dir / CONFIG, lambda tmp: tmp.write_text(text))
    write_card(bundle_dir)
