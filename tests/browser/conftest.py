"""Fixtures for tests that drive Debian's Chromium through Playwright for Python.

``playwright install`` cannot download browsers here, so ``/usr/bin/chromium`` is used
(``make browser`` installs it). Without it the tests skip, or fail when
``INSPECTOR_REQUIRE_BROWSER=1`` (as ``make test`` sets). Every test in this folder
gets the ``browser`` marker: ``pytest -m "not browser"`` leaves them out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser_helpers import (
    ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, HERE, WAIT_MS, record_errors, require_or_skip, safe_name,
    start_lab_server, stop_lab_server,
)

# The notebooks here are what the browser tests open in JupyterLab (with the repository on the kernel's
# path), not standalone notebooks: nbmake leaves them to those tests.
collect_ignore_glob = ["notebooks/*.ipynb"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


_REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(item) -> bool:
    return any(r.failed for r in item.stash.get(_REPORTS, {}).values())


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        require_or_skip(f"{CHROMIUM} is missing (make browser, or apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        require_or_skip("playwright is not installed (pip install -e '.[test]')")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    """A fresh context and page. ``page.errors`` (console errors, uncaught page errors,
    failed requests), ``page.console_errors``, ``page.page_errors``,
    ``page.failed_requests``, ``page.bad_responses`` and ``page.dialogs`` record what
    happened; on failure a screenshot and a log go to tests/artifacts/."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    pg = record_errors(context.new_page())
    yield pg
    if _failed(request.node):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = str(ARTIFACTS / safe_name(request.node.nodeid))
        try:
            pg.screenshot(path=stem + ".png", full_page=True, timeout=10_000)
        except Exception as e:  # noqa: BLE001 - a failing screenshot must not hide the failure
            print(f"screenshot failed: {e}")
        Path(stem + ".log").write_text(
            f"url: {pg.url}\n\n[errors]\n" + "\n".join(pg.errors) + "\n\n[dialogs]\n" + "\n".join(pg.dialogs)
            + "\n\n[http >= 400]\n" + "\n".join(pg.bad_responses) + "\n\n[console]\n" + "\n".join(pg.console_log))
    context.close()


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """A JupyterLab server (see :func:`browser_helpers.start_lab_server`) for the session."""
    server = start_lab_server(tmp_path_factory.mktemp("lab"))
    yield server
    stop_lab_server(server)
