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


MAX_LINES = 500
BEING_SPLIT = {"engine/runner.py"}
"""Modules over :data:`MAX_LINES` that another change is splitting right now; nothing else may grow past it."""


def test_every_module_is_at_most_500_lines():
    """A room does one job: every ``*.py`` under ``inspector/`` is at most 500 lines, except the named ones
    being split (which must still need the exception)."""
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in BEING_SPLIT}
    assert not over, over
    done = {name for name in BEING_SPLIT if sizes.get(name, 0) <= MAX_LINES}
    assert not done, f"{done} no longer needs its exception: remove it from BEING_SPLIT"


def _public_type_names(path: Path) -> list[str]:
    """The public classes ``path`` defines (at any depth), and its public module-level type aliases
    (``Name = Literal[...]``, ``X | Y``, ...: a CapWords name bound to a type expression)."""
    tree = ast.parse(path.read_text())
    names = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and not n.name.startswith("_")]
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        is_type = (isinstance(value, ast.Subscript)
                   or (isinstance(value, ast.BinOp) and isinstance(value.op, ast.BitOr)))
        if name[:1].isupper() and not name.isupper() and is_type:
            names.append(name)
    return names


SHARED_WHILE_REWORKED = {
    # Type aliases of the inspection wing, which another change is reworking right now (renamed there, not
    # here, so that the two changes do not collide): plan.py's `Source` is where a described value lives
    # (in/out/dropped), attention.py's a captured array of attention maps; grad.py's `Site` is a call's
    # (path, method, index), history_cells.py's where a watched series was recorded.
    "Source": ["attention.py", "inspection/plan.py"],
    "Site": ["history_cells.py", "inspection/grad.py"],
}


def test_no_two_public_types_share_a_name():
    """One meaning per name: no two public classes (or type aliases) in ``inspector/`` are called the same,
    so that ``Row``, ``Section`` or ``Status`` each name one thing wherever they are read. The exceptions
    (:data:`SHARED_WHILE_REWORKED`) must still be needed."""
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _public_type_names(path):
            where.setdefault(name, []).append(path.relative_to(PACKAGE).as_posix())
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert {n: p for n, p in shared.items() if SHARED_WHILE_REWORKED.get(n) != p} == {}, shared
    stale = {n for n in SHARED_WHILE_REWORKED if n not in shared}
    assert not stale, f"{stale} no longer shared: remove from SHARED_WHILE_REWORKED"


def test_the_view_model_and_its_section_builders_load_no_widget():
    """Text, rich and static HTML lower the view-model without the widget: ``viewmodel.py``, ``document.py``
    and the section builders import neither the widget's rows nor its models (anywidget, ipywidgets)."""
    model_side = [p for p in _files("views")
                  if p.stem in ("viewmodel", "document") or p.stem.endswith(("_section", "_sections"))]
    assert len(model_side) == 6, [p.name for p in model_side]
    widget_side = {f"inspector.views.{p.stem}" for p in _files("views")
                   if p.stem in ("row_source", "widget_shell", "widgets") or p.stem.endswith(("_source", "_sources"))}
    for path in model_side:
        imported = _imports(path)
        for heavy in ("anywidget", "ipywidgets", "traitlets", *widget_side):
            assert not _reaches(imported, heavy), (path.name, heavy)
