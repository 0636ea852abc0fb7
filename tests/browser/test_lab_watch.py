"""The fi.watch widget in a live JupyterLab: it redraws while the training loop runs in the
kernel (recorded by a MutationObserver in the page, with whether a cell was running), ends on the
first non-finite step and site, and shows a site's charts when it is picked. With
``INSPECTOR_SCREENSHOTS`` set, writes the README's screenshot (``watch.png``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from browser_helpers import NOTEBOOKS, PROMPT, run_notebook_in_lab

NOTEBOOK = NOTEBOOKS / "watch_live.ipynb"

RECORD = """
window.__fiLive = [];
new MutationObserver(() => {
  const s = document.querySelector('.fi-watch .fi-hist span');
  if (!s) return;
  const t = s.textContent, log = window.__fiLive;
  if (log.length && log[log.length - 1].t === t) return;
  const running = [...document.querySelectorAll(PROMPT)].some(p => p.textContent.includes('*'));
  log.push({t, running});
}).observe(document, {subtree: true, childList: true, characterData: true});
""".replace("PROMPT", repr(PROMPT))


def test_watch_widget_updates_while_the_loop_runs(page, lab_server):
    from playwright.sync_api import expect

    page.add_init_script(RECORD)
    nb = run_notebook_in_lab(page, lab_server, NOTEBOOK)
    live = nb.output(0)
    status = live.locator(".fi-hist span").first
    expect(status).to_contain_text("40 recorded steps (0 to 39)")
    expect(status).to_contain_text("first non-finite: step 30")
    expect(status).to_have_class("fi-bad")
    assert "(30, Site(kind='activation', name='out:__call__[0]'))" in nb.output(2).inner_text()

    log = page.evaluate("window.__fiLive")
    during = {int(m.group(1)) for e in log if e["running"] for m in [re.match(r"(\d+) recorded steps", e["t"])] if m}
    assert len([n for n in during if 0 < n < 40]) >= 3, log  # redrawn several times mid-loop

    # the first non-finite site was selected; picking another draws its charts
    picker = live.locator("select")
    expect(live.locator(".fi-charts").first).to_be_visible()
    assert "activation out:__call__[0]" in live.locator(".fi-site > div").first.inner_text()
    heat = live.locator("svg[aria-label='std by site and step']")
    sites = picker.locator("option").count()
    assert sites == 3 + 3 * 6  # three Dense outputs; params, grads and updates of six leaves
    expect(heat.locator("rect")).to_have_count(sites * 40)  # a cell per site and step
    picker.select_option(label="grad hidden/kernel")
    expect(live.locator(".fi-site > div").first).to_have_text("grad hidden/kernel")
    expect(live.locator("svg[aria-label='ratio of grad hidden/kernel']")).to_have_count(1)

    shots = os.environ.get("INSPECTOR_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        picker.select_option(label="activation out:__call__[0]")
        expect(live.locator(".fi-site > div").first).to_have_text("activation out:__call__[0]")
        live.screenshot(path=f"{shots}/watch.png")
    assert not page.page_errors, page.page_errors
