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
    from napari_cultureseg.core.segmentation import Segmentation

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


def merge_result(path, key: str, entry: dict, *, deep: bool = False) -> None:
    """Store ``entry`` under ``key`` in the JSON file at ``path``, keeping the other keys.

    With ``deep``, ``entry``'s own keys are merged into what is stored under ``key``
    (two runs of a benchmark that each measure a part of one entry). The file is locked
    while it is read and written, so runs side by side do not lose each other's results.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = json.loads(path.read_text()) if path.is_file() else {}
        if deep and isinstance(stored.get(key), dict):
            entry = {**stored[key], **entry}
        stored[key] = entry
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(stored, indent=1) + "\n")
        tmp.replace(path)


def write_result(path, result: dict) -> None:
    """Write ``result`` as the whole JSON file at ``path`` (a benchmark of one entry) and
    print it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
