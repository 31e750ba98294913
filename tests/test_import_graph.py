"""No circle between the modules of napari_cultureseg, counting imports inside functions too.

A function-level import hides a circle from Python (it only fails when the two
modules first load each other at the wrong moment) but not from the reader: the
two modules are one room with two doors. The graph is read from the sources
(``ast``), so it sees every import whatever runs.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import napari_cultureseg

SRC = Path(napari_cultureseg.__file__).parent


def module_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}``; packages by their dotted name."""
    top = package_dir.name
    files = {}
    for p in package_dir.rglob("*.py"):
        parts = list(p.relative_to(package_dir.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)

    def owner(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, (path, is_pkg) in files.items():
        here = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                # `from pkg import sub` imports the submodule; `from mod import name` the module
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            else:
                continue
            for t in targets:
                if t.split(".")[0] == top and (o := owner(t)) and o != mod:
                    graph[mod].add(o)
    return graph


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def test_the_sources_have_no_import_circle():
    graph = module_graph(SRC)
    assert "napari_cultureseg.core.segment" in graph["napari_cultureseg.core.scale"], (
        "the graph must see imports inside functions"
    )
    found = circle(graph)
    assert found is None, "a circle: " + " imports ".join(reversed(found))


@pytest.mark.parametrize("lazy", [False, True])
def test_a_circle_is_found_also_through_a_function_level_import(tmp_path, lazy):
    pkg = tmp_path / "napari_cultureseg"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from .b import f\n")
    b = "def f():\n    from . import a\n" if lazy else "from napari_cultureseg.core.a import f\n"
    (pkg / "core" / "b.py").write_text(b)
    (pkg / "core" / "c.py").write_text("from ..core import a\n")
    found = circle(module_graph(pkg))
    assert found is not None and set(found) == {
        "napari_cultureseg.core.a",
        "napari_cultureseg.core.b",
    }
    (pkg / "core" / "b.py").write_text("def f():\n    return 1\n")
    assert circle(module_graph(pkg)) is None


def test_no_module_is_over_500_lines():
    """Rooms named for their job: a module that grows past 500 lines is split by job."""
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert not long, f"split these modules by job: {long}"
