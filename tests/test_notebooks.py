"""Every notebook in ``notebooks/`` runs top to bottom in this venv's ``python3`` kernel.

Each notebook asserts its own facts in its cells, so a run without an error is a behaviour test.
On top of that: every displayed ``Inspection``/``Comparison`` (or widget) must come with the
widget mimetype, i.e. the notebook front end gets the interactive view, not only the fallback; and
the notebooks are stored with their outputs stripped.

The same notebooks also run under nbmake: ``.venv/bin/python -m pytest --nbmake notebooks/``.

This file is also a script, run by ``tests/test_binder.py`` with the Python of a fresh Binder venv
(which has nbclient, through jupyterlab, but no pytest): ``python tests/test_notebooks.py NB...``
prints one JSON report per notebook.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
# text/plain of the objects whose display must be the widget
INTERACTIVE = ("<Inspection", "<Comparison", "InspectionWidget(", "ComparisonWidget(")


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this one, CPU only, without ``XLA_FLAGS`` (notebook 06 asks for
    8 host devices itself, unless the environment already sets flags)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_CURRENT_TEST")}
    env["JAX_PLATFORMS"] = "cpu"
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def run_notebook(path: Path, timeout: int = 600) -> dict:
    """Executes ``path`` in a fresh ``python3`` kernel (this interpreter), cwd its folder; ``timeout``
    (per cell) only guards against a hang. Returns ``{name, seconds, error, widgets, interactive,
    missing_widget}``: ``seconds`` is reported, never judged (how long a notebook takes is for ``bench/``)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute(cwd=str(path.parent), env=kernel_env())
    except CellExecutionError as e:
        error = str(e)[-4000:]
    seconds = time.perf_counter() - start
    widgets = interactive = 0
    missing = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if out.get("output_type") == "error" and error is None:
                error = f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
            widgets += WIDGET in data
            if str(data.get("text/plain", "")).startswith(INTERACTIVE):
                interactive += 1
                if WIDGET not in data:
                    missing.append(i)
    return {"name": path.name, "seconds": round(seconds, 1), "error": error, "widgets": widgets,
            "interactive": interactive, "missing_widget": missing}


def problems(report: dict) -> list[str]:
    """What is wrong with one notebook's run (empty when it passed)."""
    out = []
    if report["error"]:
        out.append(f"{report['name']} failed: {report['error']}")
    if report["missing_widget"]:
        out.append(f"{report['name']}: cells {report['missing_widget']} displayed an inspection without "
                   f"the widget mimetype {WIDGET}")
    if not report["widgets"]:
        out.append(f"{report['name']} displayed no widget")
    return out


if __name__ == "__main__":
    print(json.dumps([run_notebook(Path(p).resolve()) for p in sys.argv[1:]]))
    sys.exit(0)

import pytest  # noqa: E402 - not needed (nor installed) when run as a script in the Binder venv

IDS = [p.stem for p in NOTEBOOKS]


def test_the_tour_is_there():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_binding_semantics.ipynb", "03_debugging_activations.ipynb",
            "04_mutable_state.ipynb", "05_large_models.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has outputs"
    assert "widgets" not in nb.metadata, "saved widget state: strip it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path):
    report = run_notebook(path)
    print(json.dumps(report))
    assert not problems(report), "\n".join(problems(report))
    assert report["interactive"] >= 1  # every notebook shows at least one inspection as a widget
