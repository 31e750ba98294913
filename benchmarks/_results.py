"""What the benchmark scripts share: per-class scores and the results files they merge into."""

from __future__ import annotations

import json
from pathlib import Path


def class_scores(classes: dict, keys, only=None) -> dict:
    """``{class: {metric: value}}`` of an ``evaluate`` result, rounded, for ``keys``."""
    return {
        c: {k: round(float(v[k]), 4) for k in keys if v.get(k) is not None}
        for c, v in classes.items()
        if only is None or c in only
    }


def merge_result(path, key: str, entry: dict) -> None:
    """Store ``entry`` under ``key`` in the JSON file at ``path``, keeping the other keys."""
    path = Path(path)
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored[key] = entry
    path.write_text(json.dumps(stored, indent=1) + "\n")
