"""binder/ works: a fresh venv built as repo2docker builds it runs every notebook.

repo2docker (mybinder.org) does, from the repository root: ``pip install -r binder/requirements.txt``
into the Python named by ``binder/runtime.txt``, then ``binder/postBuild``. This test does the same in a
new venv (this machine's ``python3``; its version is checked against runtime.txt's major.minor), then
executes each notebook in that venv's kernel with ``tests/test_notebooks.py`` as a script: nothing from the
test venv leaks in (no pytest, no playwright there).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from test_notebooks import NOTEBOOKS, REPO, problems

BINDER = REPO / "binder"


def test_pins_are_exact_and_match_this_environment():
    """Every requirement is pinned with ``==``; the pins are the versions the test suite runs with."""
    from importlib.metadata import version

    pins = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, ver = line.partition("==")
            assert sep and ver, f"unpinned requirement in binder/requirements.txt: {line!r}"
            pins[name] = ver
    for core in ("jax", "jaxlib", "flax", "ipywidgets", "rich", "treescope", "anywidget", "jupyterlab"):
        assert core in pins, f"binder/requirements.txt does not pin {core}"
    for name, ver in pins.items():
        assert version(name) == ver, f"binder pins {name}=={ver}, the suite runs {version(name)}"
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime), runtime
    assert os.access(BINDER / "postBuild", os.X_OK), "postBuild must be executable"


@pytest.fixture(scope="module")
def binder_python(tmp_path_factory) -> Path:
    """A venv built from binder/ exactly as repo2docker would: requirements, then postBuild."""
    want = (BINDER / "runtime.txt").read_text().strip().removeprefix("python-")
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if have != want:
        pytest.fail(f"binder/runtime.txt asks for Python {want}; this machine's is {have}")
    env_dir = tmp_path_factory.mktemp("binder") / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(env_dir)

    def step(*cmd):
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r

    step(python, "-m", "pip", "install", "-q", "-r", str(BINDER / "requirements.txt"))
    build = step(str(BINDER / "postBuild"))
    assert "@jupyter-widgets/jupyterlab-manager" in build.stdout and "anywidget" in build.stdout
    # the package came from this checkout, and nothing beyond the pins was needed
    where = step(python, "-c", "import inspector; print(inspector.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(REPO)
    assert step(python, "-m", "pip", "check").returncode == 0
    no_pytest = subprocess.run([python, "-c", "import pytest"], env=env, capture_output=True)
    assert no_pytest.returncode != 0, "the binder venv should not have the test dependencies"
    return python


def test_every_notebook_runs_in_the_binder_venv(binder_python):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(binder_python.parent), env.get("PATH", "")])
    r = subprocess.run([binder_python, str(REPO / "tests" / "test_notebooks.py"), *map(str, NOTEBOOKS)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    reports = json.loads(r.stdout.strip().splitlines()[-1])
    assert [rep["name"] for rep in reports] == [p.name for p in NOTEBOOKS]
    found = [msg for rep in reports for msg in problems(rep)]
    assert not found, "\n".join(found)
    print(json.dumps(reports))
