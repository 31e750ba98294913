"""The robustness catalogue (benchmarks/robustness.py): 0 crashes, 0 silent wrong results,
0 side effects over every bad input, option and bundle it tries."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "robustness.py"


@pytest.mark.slow
def test_every_bad_input_option_and_bundle_is_a_clear_error(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("robustness", BENCH)
    robustness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(robustness)
    out = tmp_path / "robustness.json"
    code = robustness.main(["--out", str(out)])
    result = json.loads(out.read_text())
    bad = [c for c in result["cases"] if c["result"] in ("crash", "silent wrong", "side effect")]
    assert code == 0 and not bad, bad
    counts = {what: sum(s.values()) for what, s in result["summary"].items()}
    assert counts["CLI"] >= 40 and counts["bundle"] >= 15 and counts["reader"] >= 10
