"""The fi.watch widget (one anywidget: uPlot charts and a canvas heatmap) in a live JupyterLab: it
redraws while the training loop runs in the kernel (recorded by a MutationObserver in the page,
with whether a cell was running), ends on the first non-finite step and site, draws charts with
tick labels, a log toggle that changes the scale and a hover readout, opens the heatmap on its
first non-finite cell, and sends a site's charts when it is picked. With ``INSPECTOR_SCREENSHOTS``
set, writes the README's screenshot (``watch.png``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from browser_helpers import NOTEBOOKS, PROMPT, run_notebook_in_lab

NOTEBOOK = NOTEBOOKS / "watch_live.ipynb"

RECORD = """
window.__fiLive = [];
new MutationObserver(() => {
  const s = document.querySelector('.fi-history .fi-status');
  if (!s) return;
  const t = s.textContent, log = window.__fiLive;
  if (log.length && log[log.length - 1].t === t) return;
  const running = [...document.querySelectorAll(PROMPT)].some(p => p.textContent.includes('*'));
  log.push({t, running});
}).observe(document, {subtree: true, childList: true, characterData: true});
""".replace("PROMPT", repr(PROMPT))

OUT = "activation out:__call__[0]"


def test_watch_widget_updates_while_the_loop_runs(page, lab_server):
    from playwright.sync_api import expect

    page.add_init_script(RECORD)
    nb = run_notebook_in_lab(page, lab_server, NOTEBOOK)
    live = nb.output(0)
    status = live.locator(".fi-history .fi-status")
    expect(status).to_contain_text("40 recorded steps (0 to 39)")
    expect(status).to_contain_text(f"first non-finite: step 30, {OUT}")
    expect(status).to_have_class(re.compile("fi-bad"))
    assert "(30, Site(kind='activation', name='out:__call__[0]'))" in nb.output(2).inner_text()
    assert live.locator(".widget-vbox, .widget-html, .widget-select, .widget-toggle-buttons").count() == 0

    log = page.evaluate("window.__fiLive")
    during = {int(m.group(1)) for e in log if e["running"] for m in [re.match(r"(\d+) recorded steps", e["t"])] if m}
    assert len([n for n in during if 0 < n < 40]) >= 3, log  # redrawn several times mid-loop

    # the first non-finite site is selected: its charts, with tick labels on both axes
    picker = live.locator("select.fi-site-pick")
    sites = picker.locator("option")
    assert sites.count() == 3 + 3 * 6  # three Dense outputs; params, grads and updates of six leaves
    assert picker.evaluate("s => s.options[s.selectedIndex].text") == OUT
    charts = live.locator(".fi-chart")
    expect(charts).to_have_count(5)  # mean, std, abs max, zero fraction, norm (an activation has no ratio)
    abs_max = live.locator(".fi-chart[data-field=abs_max]")
    expect(abs_max.locator("canvas")).to_have_count(1)
    assert "0" in abs_max.get_attribute("data-xticks").split() and abs_max.get_attribute("data-yticks").strip()

    # the log toggle changes the scale
    scale = abs_max.get_attribute("data-scale")
    abs_max.locator("button.fi-log").click()
    flipped = "linear" if scale == "log" else "log"
    expect(live.locator(".fi-chart[data-field=abs_max]")).to_have_attribute("data-scale", flipped)

    # hover: step, site and value
    over = live.locator(".fi-chart[data-field=abs_max] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    over.hover(position={"x": box["width"] * 0.3, "y": box["height"] / 2})
    expect(live.locator(".fi-chart-readout")).to_contain_text(re.compile(rf"step \d+ · {re.escape(OUT)} · abs max "))

    # the heatmap's first non-finite cell (step 30 of the output) is outlined and in view
    heat = live.locator(".fi-heat")
    cells = heat.locator("canvas.fi-heat-cells")
    x, _, w, _ = map(float, cells.get_attribute("data-first").split(","))
    heat.scroll_into_view_if_needed()
    c, b, lab = cells.bounding_box(), heat.bounding_box(), heat.locator(".fi-heat-labels").bounding_box()
    assert lab["x"] + lab["width"] <= c["x"] + x and c["x"] + x + w <= b["x"] + b["width"]
    expect(heat.locator(".fi-heat-labels .fi-bad")).to_have_text(OUT)

    # picking another site: the kernel sends its charts (a gradient: with its ratio)
    picker.select_option(label="grad hidden/kernel")
    expect(live.locator(".fi-chart")).to_have_count(6)
    expect(live.locator(".fi-chart[data-field=ratio]")).to_have_count(1)

    shots = os.environ.get("INSPECTOR_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        picker.select_option(label=OUT)
        expect(live.locator(".fi-chart")).to_have_count(5)
        live.screenshot(path=f"{shots}/watch.png")
    assert not page.page_errors, page.page_errors
