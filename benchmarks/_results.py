"""What the benchmark scripts share: per-class scores and the results files they merge into."""

from __future__ import annotations

import json
from pathlib import Path


def bundle_of(model: str):
    """A bundled model by name, or a bundle folder (e.g. a cached leave-one-out model)."""
    from napari_cultureseg.core.bundles import Bundle, load_bundle

    return Bundle.load(model) if Path(model).is_dir() else load_bundle(model)


def class_scores(classes: dict, keys, only=None) -> dict:
    """``{class: {metric: value}}`` of an ``evaluate`` result, rounded, for ``keys``."""
    return {
        c: {k: round(float(v[k]), 4) for k in keys if v.get(k) is not None}
        for c, v in classes.items()
        if only is None or c in only
    }


def scores_with(bundle, truths, keys, only, **patch) -> dict:
    """Per-class scores of ``evaluate`` (object size auto) with ``Segmentation`` methods
    replaced by ``patch`` for the call (a variant of one post-processing step), and its seconds.
    """
    import time

    from napari_cultureseg.core.evaluate import evaluate
    from napari_cultureseg.core.segment import Segmentation

    original = {name: getattr(Segmentation, name) for name in patch}
    t0 = time.perf_counter()
    try:
        for name, f in patch.items():
            setattr(Segmentation, name, f)
        r = evaluate(bundle, truths, device="cpu", diameter="auto")
    finally:
        for name, f in original.items():
            setattr(Segmentation, name, f)
    row = class_scores(r["classes"], keys, only=only)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def merge_result(path, key: str, entry: dict) -> None:
    """Store ``entry`` under ``key`` in the JSON file at ``path``, keeping the other keys."""
    path = Path(path)
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored[key] = entry
    path.write_text(json.dumps(stored, indent=1) + "\n")
