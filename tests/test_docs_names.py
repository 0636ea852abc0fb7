"""The documents name only what exists: every `fi.X`, `inspector.X` (`inspector.stats.device.X`, ...),
`engine.X` and `inspection.X` written in code style in README.md and bench/README.md, and every `*.py`, `*.js`
and `*.css` file they name, is there."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md"]
MODULES = {  # how the documents name a module -> its import path (`stats`, `costs`, `origin` ... also name
    # values in the examples, `costs.flops`, so only their module-qualified forms count: `inspector.stats.X`)
    "fi": "inspector", "inspector": "inspector", "engine": "inspector.engine", "inspection": "inspector.inspection",
    "pipeline": "inspector.inspection.pipeline",
}
BENCH_MODULES = {**MODULES, "stats": "inspector.stats"}  # bench/README.md's `stats.X` is always the module
DOTTED = re.compile(r"`([a-z_]+(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
FILE = re.compile(r"`((?:[a-z_]+/)*[a-z_0-9]+\.(?:py|js|css))`")


def _names() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        modules = BENCH_MODULES if doc.parent.name == "bench" else MODULES
        for name in DOTTED.findall(doc.read_text()):
            if name.split(".")[0] in modules and not name.endswith((".py", ".js", ".css")):
                found.append((doc.relative_to(ROOT).as_posix(), name))
    return sorted(set(found))


def _resolve(name: str) -> object:
    head, *rest = name.split(".")
    obj: object = importlib.import_module(BENCH_MODULES[head])
    for part in rest:
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        path = f"{getattr(obj, '__name__', '')}.{part}"  # a submodule not imported yet
        obj = importlib.import_module(path)
    return obj


@pytest.mark.parametrize(("doc", "name"), _names(), ids=[f"{d}:{n}" for d, n in _names()])
def test_every_name_in_the_documents_exists(doc, name):
    try:
        _resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{doc} names `{name}`, which does not exist ({e})")


def test_every_file_the_documents_name_exists():
    tracked = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts}
    missing = []
    for doc in DOCS:
        for name in set(FILE.findall(doc.read_text())):
            if not any(t == name or t.endswith("/" + name) for t in tracked):
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not missing, missing
