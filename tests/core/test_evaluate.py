import json

import numpy as np
import tifffile

from napari_cultureseg.cli import main
from napari_cultureseg.core import metrics as M
from napari_cultureseg.core import object_metrics as OM
from napari_cultureseg.core.evaluate import evaluate, truth_from_folder
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.synth import phase_culture
from napari_cultureseg.core.tiling import run_to_end


def _folder(tmp_path, n=2):
    for i in range(n):
        img, lab = phase_culture((96, 128), seed=i)
        tifffile.imwrite(tmp_path / f"s{i}_image.tif", img)
        tifffile.imwrite(tmp_path / f"s{i}_cell.tif", lab)
    return tmp_path


def test_evaluate_matches_direct_computation(tiny_bundle, tmp_path):
    truths = truth_from_folder(_folder(tmp_path), ["cell", "debris"])
    assert [t.name for t in truths] == ["s0", "s1"] and set(truths[0].masks) == {"cell"}
    res = evaluate(tiny_bundle, truths, device="cpu", diameter=None)
    assert res["images"] == 2 and set(res["classes"]) == {"cell"}  # debris has no reference
    segs = [run_to_end(segment(tiny_bundle, t.image)) for t in truths]
    pred = np.concatenate([s.masks()["cell"].ravel() for s in segs])
    ref = np.concatenate([(t.masks["cell"] > 0).ravel() for t in truths])
    m = res["classes"]["cell"]
    assert m["dice"] == M.dice(pred, ref)
    assert m["auc_low"] <= m["auc"] <= m["auc_high"]
    inst = [s.instances("cell") for s in segs]
    assert m["sa_0.5"] == OM.segmentation_accuracy(inst, [t.masks["cell"] for t in truths], 0.5)
    assert m["objects_true"] == sum(int(t.masks["cell"].max()) for t in truths)


def test_evaluate_cli_prints_a_table_and_writes_json(tiny_bundle, tmp_path, capsys):
    data = _folder(tmp_path / "d") if (tmp_path / "d").mkdir() is None else None
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                str(data),
                "--model",
                "tiny",
                "--split",
                "all",
                "--json",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Dice" in text and "mSA" in text and "cell" in text
    saved = json.loads(out.read_text())
    assert saved["images"] == 2 and "msa" in saved["classes"]["cell"]
    # a model without a test list refuses the default --split test with advice
    assert main(["evaluate", str(data), "--model", "tiny", "--quiet"]) == 2
    assert "--split all" in capsys.readouterr().err


def test_record_puts_metrics_in_config_and_card(tiny_bundle, tmp_path, capsys):
    from napari_cultureseg.core.bundles import Bundle, find_bundle

    data = tmp_path / "d"
    data.mkdir()
    _folder(data, n=1)
    assert (
        main(["evaluate", str(data), "--model", "tiny", "--split", "all", "--record", "--quiet"])
        == 0
    )
    path = find_bundle("tiny")
    ev = Bundle.load(path).config.card["evaluations"]["all"]
    assert ev["images"] == 1 and "dice" in ev["classes"]["cell"]
    card = (path / "card.md").read_text()
    assert "# tiny" in card and "| cell |" in card and "object F1" in card
    assert f"{ev['classes']['cell']['dice']:.3f}" in card
