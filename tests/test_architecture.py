"""The house's rules, read from the code's imports and calls: a lower wing never imports a higher one,
the data model opens one door into the views, and every interceptor asks one predicate whether a
method call is the model's own."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "inspector"


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every ``inspector...``/third-party module ``path`` imports (function-local imports too, unless
    ``top_level_only``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _files(folder: str) -> list[Path]:
    files = sorted((PACKAGE / folder).glob("*.py"))
    assert files, folder
    return files


def _reaches(imported: set[str], prefix: str) -> list[str]:
    return sorted(m for m in imported if m == prefix or m.startswith(prefix + "."))


def test_the_engine_imports_neither_the_inspection_wing_nor_the_entry_points_nor_the_views():
    for path in _files("engine"):
        imported = _imports(path)
        for higher in ("inspector.inspection", "inspector.api", "inspector.views"):
            assert not _reaches(imported, higher), (path.name, _reaches(imported, higher))


def test_only_the_package_door_imports_the_entry_points():
    """``api.py`` is the top floor: nothing below it (the inspection wing, the engine, costs, the views)
    climbs back to it."""
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() not in ("__init__.py", "api.py"):
            assert not _reaches(_imports(path), "inspector.api"), path


def test_the_data_model_opens_one_door_into_the_views_and_loads_no_jax_or_widgets():
    for path in _files("model"):
        views = {m for m in _reaches(_imports(path), "inspector.views")
                 if m not in ("inspector.views", "inspector.views.display")}
        assert not views, (path.name, views)
        top = _imports(path, top_level_only=True)
        for heavy in ("jax", "flax", "anywidget", "ipywidgets", "inspector.engine", "inspector.inspection"):
            assert not _reaches(top, heavy), (path.name, heavy)


def test_no_module_imports_the_old_rooms():
    for path in PACKAGE.rglob("*.py"):
        imported = _imports(path)
        assert not {"inspector.run", "inspector.collect"} & imported, path


def test_the_lifted_wrapper_test_lives_in_one_place():
    """Only ``capture.user_call`` asks whether a call is a lifted transform's wrapper: every interceptor
    asks ``user_call`` or ``recorded_call`` (which adds the structure-only pass)."""
    callers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if "is_lifted_wrapper_call(" in p.read_text() and p.name != "_compat.py")
    assert callers == ["capture.py"], callers
    interceptors = ("engine/recorder.py", "inspection/grad.py", "watch_records.py", "cost_attribution.py", "failure.py")
    for interceptor in interceptors:
        text = (PACKAGE / interceptor).read_text()
        assert "recorded_call(" in text or "user_call(" in text, interceptor


def test_backend_policy_is_decided_in_one_place():
    """``jax.default_backend() == 'cpu'`` is asked by the inspection wing only through its backend room."""
    for path in _files("inspection") + _files("engine"):
        if path.name != "backend.py":
            assert 'default_backend() == "cpu"' not in path.read_text(), path.name
            assert 'default_backend() != "cpu"' not in path.read_text(), path.name
