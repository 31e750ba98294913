"""One home for every default: the CLI's options default to what the engine's functions do.

The widgets' side is in tests/widgets/test_widget_defaults.py. A default that one
entry point changes and another does not gives a biologist two answers to one
question (a tile size, an object size, a runtime), so every pair is checked here.
"""

from __future__ import annotations

import inspect

import pytest

from napari_cultureseg.cli import build_parser
from napari_cultureseg.core.evaluate import evaluate
from napari_cultureseg.core.scale import choose_zoom
from napari_cultureseg.core.segment import segment
from napari_cultureseg.core.training.config import TrainConfig

# (CLI command, engine function, options shared under the same name)
SHARED = [
    ("segment", segment, ["device", "tile", "overlap", "batch_size", "tta", "runtime"]),
    ("segment", choose_zoom, ["diameter", "pixel_size"]),
    ("evaluate", evaluate, ["device", "diameter", "tta", "runtime"]),
    ("train", TrainConfig, ["threads"]),
]


def cli_defaults(command: str) -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    return {a.dest: a.default for a in sub.choices[command]._actions}  # noqa: SLF001


def engine_defaults(fn) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def disagreements(command: str, fn, names: list[str]) -> list[str]:
    cli, engine = cli_defaults(command), engine_defaults(fn)
    out = []
    for name in names:
        if name not in cli or name not in engine:
            out.append(f"{name}: missing in {'the CLI' if name not in cli else fn.__name__}")
        elif cli[name] != engine[name]:
            out.append(
                f"{name}: `cultureseg {command}` {cli[name]!r}, {fn.__name__} {engine[name]!r}"
            )
    return out


@pytest.mark.parametrize(
    ("command", "fn", "names"), SHARED, ids=lambda v: getattr(v, "__name__", v)
)
def test_cli_and_engine_defaults_agree(command, fn, names):
    assert not disagreements(command, fn, names)


def test_a_wrong_default_is_caught(monkeypatch):
    """The check itself can fail: a CLI default changed behind the engine's back."""
    import napari_cultureseg.cli as cli

    real = cli.build_parser

    def changed():
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
        sub.choices["segment"].set_defaults(tta=4)
        return parser

    monkeypatch.setattr(cli, "build_parser", changed)
    monkeypatch.setitem(globals(), "build_parser", changed)
    said = disagreements("segment", segment, ["tta"])
    assert said == ["tta: `cultureseg segment` 4, segment None"]
