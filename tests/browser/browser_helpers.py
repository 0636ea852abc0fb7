"""Helpers for the browser tests: Chromium/JupyterLab plumbing and widget interactions.

Import from tests as ``from browser_helpers import ...`` (this folder is on ``sys.path``
because it has a conftest.py and no ``__init__.py``). The fixtures live in conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
NOTEBOOKS = HERE / "notebooks"

CHROMIUM = os.environ.get("INSPECTOR_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 180_000
"""How long the browser tests wait for what must appear: a guard against a hang, never a judgement
of speed (on a busy machine Lab, the kernel and Chromium all take long)."""
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]

# stderr lines a healthy notebook may print (JAX falling back to CPU on a GPU host, ...).
BENIGN_STDERR = (
    r"An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed",
    r"Falling back to cpu",
    r"Platform '\w+' is experimental",
)


def require_or_skip(reason: str) -> None:
    """Skips, or fails when ``INSPECTOR_REQUIRE_BROWSER=1`` (CI: a missing browser is a bug)."""
    if os.environ.get("INSPECTOR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (INSPECTOR_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:150]


# -- page error recording ------------------------------------------------------------
def record_errors(page: Any) -> Any:
    """Attaches lists to a Playwright page: ``page.errors`` (console errors, uncaught page
    errors and failed requests, each prefixed with its kind), and separately
    ``page.console_errors``, ``page.page_errors``, ``page.failed_requests``,
    ``page.bad_responses`` (HTTP >= 400), ``page.dialogs`` and ``page.console_log``."""
    page.errors = []
    page.console_errors = []
    page.page_errors = []
    page.failed_requests = []
    page.bad_responses = []
    page.dialogs = []
    page.console_log = []

    def on_console(msg: Any) -> None:
        page.console_log.append(f"{msg.type}: {msg.text}")
        if msg.type == "error":
            page.console_errors.append(msg.text)
            page.errors.append(f"console: {msg.text}")

    def on_dialog(dialog: Any) -> None:
        page.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("console", on_console)
    def on_pageerror(exc: Any) -> None:
        page.page_errors.append(str(exc))
        page.errors.append(f"pageerror: {exc}")

    def on_requestfailed(req: Any) -> None:
        page.failed_requests.append(f"{req.url} {req.failure}")
        page.errors.append(f"requestfailed: {req.url} {req.failure}")

    page.on("pageerror", on_pageerror)
    page.on("requestfailed", on_requestfailed)
    page.on("response", lambda r: page.bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("dialog", on_dialog)
    return page


def page_errors(page: Any, ignore: Iterable[str] = ()) -> list[str]:
    """Console errors, uncaught page errors and failed requests, minus ``ignore`` regexes."""
    pats = [re.compile(p) for p in ignore]
    return [e for e in page.errors if not any(p.search(e) for p in pats)]


def assert_clean(page: Any, ignore: Iterable[str] = ()) -> None:
    errors = page_errors(page, ignore)
    assert not errors, "browser reported errors:\n" + "\n".join(errors)
    assert not page.dialogs, f"dialogs opened: {page.dialogs}"


# -- JupyterLab server ---------------------------------------------------------------
@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    proc: subprocess.Popen
    log: Path
    env: dict = field(repr=False, default_factory=dict)

    def api(self, path: str) -> Any:
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"null")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def start_lab_server(base: Path, timeout: float = 300) -> LabServer:
    """JupyterLab on a free 127.0.0.1 port with a random token and isolated Jupyter dirs
    (config, data, runtime, settings, workspaces) under ``base``; the kernel can import
    this checkout's ``inspector`` (PYTHONPATH). Ready once ``/api/status`` answers 200."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        require_or_skip("jupyterlab is not installed")
    dirs = {k: base / k for k in ("root", "config", "data", "runtime", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (dirs["config"] / "labconfig").mkdir(exist_ok=True)
    (dirs["config"] / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]), JUPYTER_PLATFORM_DIRS="1",
        PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env.pop("JUPYTER_PATH", None)
    log = base / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--ServerApp.open_browser=False"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=dirs["root"],
                                start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, dirs["root"], proc, log, env)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyterlab exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("/api/status")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            stop_lab_server(server)
            raise RuntimeError(f"jupyterlab not ready after {timeout} s:\n{server.log_tail()}")
        time.sleep(0.2)


def stop_lab_server(server: LabServer, timeout: float = 15) -> None:
    """SIGTERM (jupyter_server then shuts its kernels down), SIGKILL of the group if it hangs."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# -- driving a notebook in Lab ---------------------------------------------------------
PROMPT = ".jp-Notebook .jp-CodeCell .jp-InputPrompt"
IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
RUN_ALL = "li.lm-Menu-item[data-command='runmenu:run-all']"


@dataclass
class LabNotebook:
    """A notebook open in Lab. Cells are ``jp-Cell`` elements in notebook order."""

    page: Any
    server: LabServer
    name: str
    reruns: int = 0

    @property
    def cells(self) -> Any:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    def cell(self, index: int) -> Any:
        return self.cells.nth(index)

    def output(self, index: int) -> Any:
        """The output area of cell ``index`` (all its outputs)."""
        return self.cell(index).locator(".jp-Cell-outputArea")

    def last_output(self) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell-outputArea").last

    def outputs_text(self) -> str:
        return "\n".join(self.page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts())

    def wait_idle(self, timeout: float = WAIT_MS) -> None:
        self.page.locator(IDLE).first.wait_for(state="attached", timeout=timeout)

    def stderr_outputs(self) -> list[str]:
        return self.page.locator(
            ".jp-Notebook .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()


def _prompts(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(PROMPT).all_inner_texts()]


def _click_run_all(page: Any) -> None:
    """Run menu -> Run All Cells, re-clicked (after Escape) when nothing starts within 60 s:
    the first click after page load is occasionally lost."""
    before = _prompts(page)
    for _attempt in range(3):
        page.locator(PROMPT).first.click()  # focus the notebook, so the menu targets it
        page.locator("li.lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(RUN_ALL).click()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _prompts(page) != before:  # queued cells show [*], then [n]
                return
            time.sleep(0.1)
        page.keyboard.press("Escape")
    raise AssertionError(f"Run All did nothing after 3 clicks; prompts: {_prompts(page)}")


def _wait_kernel_settled(server: LabServer, name: str, timeout: float, quiet: float = 1.0) -> None:
    """Waits until the server has one session for ``name`` whose kernel is idle and has
    stayed the same for ``quiet`` seconds. Lab sometimes starts two kernels for a new
    session and shuts the first down; running cells during that swap loses them."""
    deadline = time.monotonic() + timeout
    last, since = None, 0.0
    while time.monotonic() < deadline:
        try:
            sessions = [s for s in server.api("/api/sessions") if s.get("path", "").endswith(name)]
        except (urllib.error.URLError, OSError):
            sessions = []
        kernel = (sessions[0].get("kernel") or {}) if len(sessions) == 1 else {}
        key = kernel.get("id") if kernel.get("execution_state") == "idle" else None
        if key is not None and key == last:
            if time.monotonic() - since >= quiet:
                return
        else:
            last, since = key, time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"kernel for {name} not settled after {timeout} s:\n{server.log_tail()}")


def run_notebook_in_lab(page: Any, lab_server: LabServer, notebook_path: str | Path, timeout: float = 600,
                        allow_stderr: Iterable[str] = BENIGN_STDERR, check_errors: bool = True) -> LabNotebook:
    """Copies ``notebook_path`` into the server root under a unique name, opens it in a
    fresh workspace, waits for its kernel to be idle (and settled), runs all cells
    (re-clicking Run All if a click is lost), waits until nothing is queued and, with
    ``check_errors``, asserts that every code cell ran, with no error/stderr output
    (``allow_stderr`` regexes excepted) and no uncaught page error.

    When cells are left unrun without any error output (the kernel connection was
    replaced mid-run), Run All is repeated, at most twice; ``nb.reruns`` counts that.
    Returns a :class:`LabNotebook` whose ``output(i)`` etc. address cells by index."""
    src = Path(notebook_path)
    uid = uuid.uuid4().hex[:10]
    name = f"{src.stem}-{uid}.ipynb"
    shutil.copyfile(src, lab_server.root / name)
    n_code = sum(c.get("cell_type") == "code" for c in json.loads(src.read_text(encoding="utf-8"))["cells"])
    t_end = time.monotonic() + timeout
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{lab_server.url}/lab/workspaces/t-{uid}/tree/{name}?token={lab_server.token}")
    nb = LabNotebook(page, lab_server, name)
    nb.wait_idle(timeout=timeout * 1000 / 2)
    _wait_kernel_settled(lab_server, name, timeout=max(5.0, t_end - time.monotonic()))
    nb.wait_idle()
    page.locator(PROMPT).nth(max(n_code - 1, 0)).wait_for(state="attached")

    pats = [re.compile(p) for p in allow_stderr]

    def bad_outputs() -> list[str]:
        return [t for t in nb.stderr_outputs() if not all(any(p.search(line) for p in pats)
                                                          for line in t.splitlines() if line.strip())]

    for nb.reruns in range(3):
        _click_run_all(page)
        # Settled when nothing is queued/running and the kernel is idle (an error clears the queue).
        page.wait_for_function(
            """([sel, idle]) => {
                const ps = [...document.querySelectorAll(sel)].map(e => e.textContent.trim());
                return ps.length > 0 && !ps.some(p => p.includes('*')) && ps.some(p => /\\[\\d+\\]/.test(p))
                    && document.querySelector(idle) !== null;
            }""", arg=[PROMPT, IDLE], timeout=max(1.0, t_end - time.monotonic()) * 1000, polling=100)
        prompts = _prompts(page)
        all_ran = len(prompts) == n_code and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
        if all_ran or bad_outputs():
            break
    if check_errors:
        bad = bad_outputs()
        assert not bad, "notebook produced error/stderr output:\n" + "\n---\n".join(bad)
        assert all_ran, f"not every cell ran: {prompts}"
        assert not page.page_errors, f"uncaught page errors: {page.page_errors}"
    return nb


# -- interactions with the inspector tree widget (inspector/views/static/tree.js) ----------
# Selectors are module-level so a widget redesign means editing them in one place.
# ``path`` arguments are row names joined by "/" (e.g. "params/encoder/Dense_0"), or a list
# of names, each a string (matched exactly) or a compiled regex; use a list when a name has
# a "/" in it, e.g. [re.compile(r"#\d+ encoder/Dense_0:__call__\[0\]$"), "value"] in the
# Intermediates tab. ``scope`` is a Page or a Locator holding one visible tree
# (e.g. ``nb.output(i)``; switch widget tabs first).
LIST = ".fi-list"
ROW = ".fi-row"
ROW_NAME = ".fi-name"
TWISTY = ".fi-tw"
KIDS = ".fi-kids"
SEARCH = "input.fi-search"
COUNT = ".fi-count"


def _name_is(scope: Any, name: str | re.Pattern) -> Any:
    page = getattr(scope, "page", scope)  # a Locator has .page; a Page is its own
    pattern = name if isinstance(name, re.Pattern) else re.compile("^" + re.escape(name) + "$")
    return page.locator(ROW_NAME, has_text=pattern)


def _split(path: str | Iterable[str | re.Pattern]) -> list:
    return [p for p in path.split("/") if p] if isinstance(path, str) else list(path)


def tree_level(scope: Any) -> Any:
    """The top level (row list) of the visible tree in ``scope``."""
    return scope.locator(f"{LIST}:visible").first


def tree_row(level: Any, name: str | re.Pattern) -> Any:
    """The row named exactly ``name`` directly in ``level`` (a row list or children box)."""
    return level.locator(f":scope > div > {ROW}", has=_name_is(level, name)).first


def tree_expand(scope: Any, path: str | Iterable[str | re.Pattern], timeout: float = WAIT_MS) -> Any:
    """Opens each row along ``path`` (a kernel round trip when its children are not
    loaded yet) and returns the children box of the last one once it has rows."""
    level = tree_level(scope)
    for name in _split(path):
        row = tree_row(level, name)
        kids = row.locator(f"xpath=following-sibling::div[contains(@class,'{KIDS[1:]}')]")
        row.wait_for(state="visible", timeout=timeout)  # rendered (and pre-opened, if it is) before we look
        if not kids.is_visible():
            assert row.locator(TWISTY).inner_text().strip(), f"tree row {name!r} has no children to expand"
            row.locator(TWISTY).click()
        kids.locator(ROW).first.wait_for(state="visible", timeout=timeout)
        level = kids
    return level


def tree_search(scope: Any, query: str, timeout: float = WAIT_MS) -> Any:
    """Types ``query`` into the visible tree's search box, waits for the answer (the
    match count line) and returns the tree's row list (matches are its top level)."""
    box = scope.locator(f"{SEARCH}:visible").first
    box.fill(query)
    tree = box.locator("xpath=..")
    tree.locator(f"{LIST} > {COUNT}").wait_for(state="visible", timeout=timeout)
    return tree.locator(LIST)


def tree_click_leaf(scope: Any, path: str | Iterable[str | re.Pattern], timeout: float = WAIT_MS) -> Any:
    """Expands the parents of leaf ``path`` and clicks its name (the widget then shows
    its detail); returns the leaf row."""
    names = _split(path)
    level = tree_expand(scope, names[:-1], timeout) if len(names) > 1 else tree_level(scope)
    row = tree_row(level, names[-1])
    row.locator(ROW_NAME).click(timeout=timeout)
    return row


# -- the widget's shell (one anywidget: inspector/views/static/shell.js) -------------------
TAB = ".fi-tab"
STATUS = ".fi-status"
JUMP = ".fi-jump[data-jump=forward]"
GRAD_JUMP = ".fi-jump[data-jump=grad]"
DETAIL = ".fi-detail-pane"
DETAIL_FRAME = "iframe.fi-detail-frame"


def widget_tab(scope: Any, name: str) -> Any:
    """Opens the widget tab ``name`` (``"variables"``, ``"intermediates"``, ...) in ``scope`` and
    returns its panel."""
    tab = scope.locator(f"{TAB}[data-tab='{name}']").first
    panel = scope.locator(f".fi-panel[data-panel='{name}']").first
    for _ in range(3):  # Lab may still be scrolling (after a scroll inside the detail's iframe): a click can miss
        tab.scroll_into_view_if_needed()
        tab.click()
        try:
            panel.wait_for(state="visible", timeout=5_000)
            return panel
        except Exception:  # noqa: BLE001 - click again; the last wait below reports
            pass
    panel.wait_for(state="visible")
    return panel


def detail(scope: Any) -> Any:
    """The detail pane's content (a FrameLocator: the pane is a sandboxed iframe, so that treescope's
    script runs); locate text and ``treescope-container`` in it as in a page."""
    return scope.locator(f"{DETAIL}:visible {DETAIL_FRAME}").first.content_frame


def wait_treescope_drawn(scope: Any, text: str, timeout: float = WAIT_MS) -> Any:
    """Waits until treescope has drawn in the detail pane of the widget in ``scope`` (its custom element
    ran: ``text`` is in its shadow DOM, which Playwright's locators pierce); returns the pane's content.
    Treescope draws what is (nearly) on screen, so the pane is scrolled into view from outside."""
    from playwright.sync_api import expect

    import time

    scope.locator(f"{DETAIL}:visible {DETAIL_FRAME}").first.scroll_into_view_if_needed(timeout=timeout)
    pane = detail(scope)
    container = pane.locator("treescope-container").first
    container.wait_for(state="attached", timeout=timeout)
    # the array itself on screen (the pane may be taller than the window, and the page's layout may still
    # move): scrolled to again until treescope has drawn (Chromium does not render an off-screen frame)
    end = time.monotonic() + timeout / 1000
    while time.monotonic() < end:
        container.scroll_into_view_if_needed(timeout=timeout)
        try:
            expect(container).to_contain_text(text, timeout=3000)
            return pane
        except AssertionError:
            continue
    expect(container).to_contain_text(text, timeout=1)
    return pane


# -- marimo --------------------------------------------------------------------------
@dataclass
class MarimoServer:
    process: subprocess.Popen
    url: str
    app: Path
    log: Path


MARIMO_CONFIG = """[runtime]
auto_instantiate = true
on_cell_change = "autorun"

[completion]
activate_on_typing = false
"""
"""The user config the test server runs with (its own XDG_CONFIG_HOME): every cell runs when the app opens."""


def start_marimo_server(app: Path, base: Path, timeout: float = 300) -> MarimoServer:
    """``marimo edit --headless`` of a copy of ``app`` (marimo may write to the file it edits) on a free
    127.0.0.1 port, without a token, with its own config and home under ``base`` and the repository and
    this folder on its kernel's path; ready when ``/health`` answers."""
    marimo = Path(sys.executable).with_name("marimo")
    if not marimo.exists():
        require_or_skip("marimo is not installed (pip install -e '.[test]')")
    (base / "config" / "marimo").mkdir(parents=True, exist_ok=True)
    (base / "config" / "marimo" / "marimo.toml").write_text(MARIMO_CONFIG)
    copy = base / app.name
    shutil.copyfile(app, copy)
    port = free_port()
    log = base / "marimo.log"
    env = {**os.environ, "HOME": str(base), "XDG_CONFIG_HOME": str(base / "config"),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(marimo), "edit", "--headless", "--host", "127.0.0.1", "--port", str(port), "--no-token",
             "--skip-update-check", str(copy)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=base, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = MarimoServer(process, url, copy, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"marimo exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    stop_marimo_server(server)
    raise RuntimeError(f"marimo did not answer on {url} in {timeout} s:\n{log.read_text()[-3000:]}")


def stop_marimo_server(server: MarimoServer, timeout: float = 15) -> None:
    """Stops the server and its kernel (its own process group)."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout)


def open_marimo_app(page: Any, server: MarimoServer, widgets: int, timeout: float = WAIT_MS) -> Any:
    """Opens the app, runs it (its cells run at open; a click on "run all" if they are still stale) and
    waits until ``widgets`` of inspector's widgets are drawn; returns their locator."""
    page.goto(server.url + "/")
    shown = page.locator(".fi-widget")
    deadline = time.monotonic() + timeout / 1000
    clicked = False
    while shown.count() < widgets:
        if time.monotonic() > deadline:
            raise AssertionError(f"{shown.count()} of {widgets} widgets after {timeout / 1000:.0f} s")
        if not clicked and time.monotonic() > deadline - timeout / 1000 + 30:
            run_all = page.locator("[data-testid=run-button]").last  # the app's "run all stale cells"
            if run_all.is_visible() and run_all.is_enabled():
                run_all.click()
            clicked = True
        page.wait_for_timeout(250)
    return shown
