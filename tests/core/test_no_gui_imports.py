"""core/ must run without Qt, napari or magicgui (DESIGN.md: dependencies point down only)."""

import ast
import subprocess
import sys
from pathlib import Path

import napari_cultureseg.core as core

FORBIDDEN = {
    "napari",
    "qtpy",
    "magicgui",
    "superqt",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "vispy",
}


def test_core_sources_import_no_gui_package():
    bad = []
    for path in Path(core.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            bad += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not bad, bad


def test_using_the_engine_loads_no_gui_module():
    code = (
        "import sys, numpy as np\n"
        "import napari_cultureseg.core.bundles as b, napari_cultureseg.core.segment as s\n"
        "import napari_cultureseg.core.bundle_config as bc\n"
        "import napari_cultureseg.core.tiling as t, napari_cultureseg.core.images as i\n"
        "import napari_cultureseg.core.postprocess, napari_cultureseg.core.metrics\n"
        "import napari_cultureseg.core.training, napari_cultureseg.core.synth\n"
        "import napari_cultureseg.cli\n"
        "cfg = bc.BundleConfig(name='x', architecture='unet', classes=(bc.ClassSpec('c'),),\n"
        "    params={'encoder': 'tu-resnet10t', 'encoder_depth': 3,\n"
        "            'decoder_channels': [16, 8, 8]})\n"
        "t.run_to_end(s.segment(b.Bundle(cfg), np.random.rand(70, 90), tile=64))\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_importing_the_cli_and_core_does_not_import_torch():
    code = (
        "import sys, napari_cultureseg.cli, napari_cultureseg.core.bundles, "
        "napari_cultureseg.core.segment, napari_cultureseg._reader\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "torch imported eagerly: " + r.stderr[-1000:]
