"""``History.to_html`` opened from file:// in Chromium with the network blocked: uPlot charts with
tick labels, a log toggle that changes the scale, a hover readout of the history's numbers, zoom
and reset, NaN steps marked in red, a heatmap that opens on its first non-finite cell with row
labels that stay visible, hostile names shown as text, dark mode, no console error."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from browser_helpers import assert_clean

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_history_views import fill, sites

from inspector.history import History, Site
from inspector.views import palette
from inspector.views.format import num
from inspector.views.history_html import history_html

EVIL = "</script><img src=x onerror=alert(1)>\u202e"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """220 steps x 27 sites (one with a hostile name), NaN at step 204 in site 3."""
    h = History()
    fill(h, range(220), [*sites(26), Site("activation", EVIL)], bad={204: 3, 210: 3})
    path = tmp_path_factory.mktemp("history") / "short.html"
    h.to_html(str(path))
    return h, path


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """1,000 steps x 2,000 sites, NaN at step 700 in site 1500."""
    h = History(max_records=2_100_000)
    fill(h, range(1000), sites(2000), bad={700: 1500})
    path = tmp_path_factory.mktemp("history") / "long.html"
    h.to_html(str(path))
    return h, path


def open_offline(page, path):
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.route(re.compile(r"^(https?|wss?)://"), lambda route: route.abort())
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    page.locator(".fi-chart canvas").first.wait_for()
    return requests


def plot_value(page, i, expr):
    """``expr`` evaluated with ``u`` the page's ``i``-th uPlot chart."""
    plots = "document.querySelector('.fi-history').fiPlots"
    return page.evaluate(f"(() => {{ const u = {plots}[{i}]; return {expr}; }})()")


def field_index(page, field):
    fields = page.locator(".fi-chart").evaluate_all("els => els.map(e => e.dataset.field)")
    return fields.index(field)


def test_the_page_draws_readable_charts_offline(page, short_run):
    from playwright.sync_api import expect

    h, path = short_run
    assert path.stat().st_size <= 1_000_000
    requests = open_offline(page, path)
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    status = page.locator(".fi-status")
    expect(status).to_have_text("220 recorded steps (0 to 219), 27 sites; first non-finite: step 204, "
                                "activation layer_3:__call__[0]")
    expect(status).to_have_class(re.compile("fi-bad"))
    expect(page.locator(".fi-site-pick")).to_have_value("3")  # the first non-finite site's charts
    charts = page.locator(".fi-chart")
    expect(charts).to_have_count(6)  # mean, std, abs max, zero fraction, norm, ratio
    assert [c.inner_text().split("\n")[0] for c in charts.locator(".fi-chart-name").all()] == [
        "mean", "std", "abs max", "zero fraction", "norm", "ratio"]

    # axes with tick labels: steps on x, values on y; abs max spans > 2 decades: log by default
    k = field_index(page, "abs_max")
    chart = charts.nth(k)
    expect(chart).to_have_attribute("data-scale", "log")
    assert {"0", "100", "200"} <= set(chart.get_attribute("data-xticks").split())
    log_ticks = chart.get_attribute("data-yticks").split()
    assert len(log_ticks) >= 2 and all(re.fullmatch(r"1(0*|e[+-]\d\d)|0\.0*1", t) for t in log_ticks), log_ticks
    assert plot_value(page, k, "u.scales.y.distr") == 3
    chart.locator("button.fi-log").click()
    chart = page.locator(".fi-chart").nth(k)
    expect(chart).to_have_attribute("data-scale", "linear")
    assert plot_value(page, k, "u.scales.y.distr") == 1
    assert chart.get_attribute("data-yticks").split() != log_ticks

    # the first non-finite step is in view, marked by a red line at its step
    lo, hi = plot_value(page, k, "[u.scales.x.min, u.scales.x.max]")
    assert lo <= 204 <= hi
    bad = page.evaluate("getComputedStyle(document.querySelector('.fi-history')).getPropertyValue('--fi-bad')")
    red = plot_value(page, k, "Array.from(u.ctx.getImageData(Math.round(u.valToPos(204, 'x', true)), "
                              "u.bbox.top + 3, 1, 1).data)")
    want = tuple(int(bad.strip()[i:i + 2], 16) for i in (1, 3, 5))
    assert tuple(red[:3]) == want, (red, bad)

    # hover: step, site and the history's value at that step
    over = page.locator(".fi-chart").nth(k).locator(".u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    over.hover(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    readout = page.locator(".fi-chart-readout")
    expect(readout).to_contain_text("activation layer_3:__call__[0] · abs max ")
    m = re.match(r"step (\d+) · activation layer_3:__call__\[0\] · abs max (\S+)", readout.inner_text())
    assert m, readout.inner_text()
    assert m.group(2) == num(h["activation", "layer_3:__call__[0]"][int(m.group(1))].abs_max)

    # zoom on steps (drag), all charts together; reset
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 20, steps=5)
    page.mouse.up()
    zoomed = [plot_value(page, i, "[u.scales.x.min, u.scales.x.max]") for i in range(6)]
    assert all(z == zoomed[0] for z in zoomed) and zoomed[0][1] - zoomed[0][0] < 100, zoomed
    # shift+drag pans the zoomed window to later steps (the right edge dragged left), all charts together
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 20, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    panned = [plot_value(page, i, "[u.scales.x.min, u.scales.x.max]") for i in range(6)]
    assert all(p == panned[0] for p in panned), panned
    width = zoomed[0][1] - zoomed[0][0]
    assert panned[0][0] > zoomed[0][0] + width / 4 and abs((panned[0][1] - panned[0][0]) - width) < 1e-6 * width + 1e-9
    page.locator("button.fi-reset").click()
    assert plot_value(page, 0, "[u.scales.x.min, u.scales.x.max]") == [0, 219]
    assert_clean(page)


def first_cell_in_view(page) -> tuple[float, float, float, float]:
    """Asserts the first non-finite cell lies in the heatmap's visible part, right of the row
    labels (which stay at its left edge); returns the cell (x, y, w, h) within the canvas."""
    heat = page.locator(".fi-heat")
    cells = heat.locator("canvas.fi-heat-cells")
    x, y, w, hgt = map(float, cells.get_attribute("data-first").split(","))
    labels = heat.locator(".fi-heat-labels")
    c, b, lab = cells.bounding_box(), heat.bounding_box(), labels.bounding_box()
    cell_x = c["x"] + x
    assert lab["x"] + lab["width"] <= cell_x and cell_x + w <= b["x"] + b["width"], (cell_x, lab, b)
    assert abs(lab["x"] - b["x"]) < 3  # the labels stay put while the cells scroll
    return x, y, w, hgt


def test_a_narrow_heatmap_scrolls_to_its_first_nonfinite_cell_and_keeps_its_labels(browser, short_run):
    from playwright.sync_api import expect

    _, path = short_run
    ctx = browser.new_context(viewport={"width": 720, "height": 900})
    try:
        page = ctx.new_page()
        page.goto(path.as_uri())
        page.locator(".fi-chart canvas").first.wait_for()
        page.wait_for_function("document.querySelector('.fi-heat').scrollLeft > 0")  # step 204 is far right
        heat = page.locator(".fi-heat")
        assert heat.evaluate("h => h.scrollWidth > h.clientWidth")
        first_cell_in_view(page)
        expect(heat.locator(".fi-heat-labels .fi-bad")).to_have_text("activation layer_3:__call__[0]")
        heat.evaluate("h => { h.scrollLeft = h.scrollWidth; }")
        page.wait_for_function("document.querySelector('.fi-heat').scrollLeft > 100")
        lab, b = heat.locator(".fi-heat-labels").bounding_box(), heat.bounding_box()
        assert abs(lab["x"] - b["x"]) < 3  # still in view, scrolled all the way right
    finally:
        ctx.close()


def test_the_heatmap_of_2000_sites_opens_on_its_first_nonfinite_cell(page, long_run):
    from playwright.sync_api import expect

    _, path = long_run
    assert path.stat().st_size <= 1_000_000
    open_offline(page, path)
    x, y, w, hgt = first_cell_in_view(page)
    labels = page.locator(".fi-heat .fi-heat-labels")
    expect(labels.locator(".fi-bad")).to_have_text("activation layer_1500:__call__[0]")
    # hovering the cell names its steps, site and value
    page.locator("canvas.fi-heat-cells").hover(position={"x": x + w / 2, "y": y + hgt / 2})
    readout = page.locator(".fi-heat-readout")
    expect(readout).to_contain_text("activation layer_1500:__call__[0] · std")
    expect(readout).to_contain_text("NaN or Inf")
    expect(readout).to_contain_text(re.compile(r"steps 6\d\d-7\d\d|steps 7\d\d-7\d\d"))
    # sites whose charts were left out say so; the page says how many it holds
    expect(page.locator(".fi-chart-note")).to_contain_text(re.compile(r"charts embedded for \d+ of 2000 sites"))
    page.locator(".fi-site-pick").select_option("1999")
    expect(page.locator(".fi-chart-note")).to_contain_text("this page holds the charts of")
    expect(page.locator(".fi-chart")).to_have_count(0)
    assert_clean(page)


def test_hostile_names_are_text_and_dark_mode_takes_the_dark_palette(browser, short_run):
    _, path = short_run
    ctx = browser.new_context(color_scheme="dark")
    try:
        page = ctx.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        page.locator(".fi-chart canvas").first.wait_for()
        assert page.locator("img").count() == 0 and dialogs == []
        option = page.locator(".fi-site-pick option").nth(26).inner_text()
        assert option == "activation </script><img src=x onerror=alert(1)>\\u202e"
        bg = page.evaluate("getComputedStyle(document.querySelector('.fi-history')).getPropertyValue('--fi-bg')")
        assert bg.strip() == palette.DARK["bg"]
    finally:
        ctx.close()


def test_two_runs_overlay(page, tmp_path):
    a, b = History(), History()
    fill(a, range(60), sites(3), bad={50: 1})
    fill(b, range(80), sites(3), seed=3)
    path = tmp_path / "two.html"
    path.write_text(history_html(a, other=b, other_title="baseline run"), encoding="utf-8")
    open_offline(page, path)
    from playwright.sync_api import expect

    expect(page.locator(".fi-chart-note")).to_contain_text("dashed: baseline run")
    assert plot_value(page, 0, "u.series.length") == 3
    xs = plot_value(page, 0, "[u.data[0][0], u.data[0][u.data[0].length - 1]]")
    assert xs == [0, 79]  # both runs' steps on one axis, all in view
    assert plot_value(page, 0, "[u.scales.x.min, u.scales.x.max]") == [0, 79]
    std = plot_value(page, 1, "u.data[2].filter(v => v !== null)")
    np.testing.assert_array_equal(std, b.snapshot().cells["std"][:, 1])
    assert_clean(page)


def test_histograms_over_steps_draw_the_stored_counts(page, tmp_path):
    """A run watched with histograms=True: the site's step x bin chart with bin labels on its axis,
    a hover readout of the stored count at that step and bin, zoom shared with the other charts."""
    from test_watch_histograms import filled

    from playwright.sync_api import expect

    h = filled(120)
    path = tmp_path / "hist.html"
    h.to_html(str(path))
    open_offline(page, path)
    box = page.locator(".fi-hist-chart")
    expect(box).to_have_count(1)
    expect(page.locator(".fi-site-pick")).to_have_value("0")  # grad w: the first site's charts
    stored = h.histogram(("grad", "w"))
    yticks = box.get_attribute("data-yticks").split(" ")
    edges = {f"{sign}2^{2 * k - 32}" for sign in "+-" for k in range(1, 32)} | {"+<2^-30", "-<2^-30", "0"}
    assert "0" in yticks and len(yticks) >= 4 and set(yticks) <= edges, yticks  # each bin by its lower edge
    i = field_index(page, "histogram")
    # hover the column of step 40, on the row of its largest bin: the readout is that stored count
    occupied = np.flatnonzero(stored.counts.sum(axis=0))
    lo = int(occupied[0])
    row = stored.counts[40]
    b = int(np.argmax(row))
    x, y = plot_value(page, i, f"[u.valToPos(40.5, 'x'), u.valToPos({b - lo}, 'y')]")
    box.scroll_into_view_if_needed()
    over = box.locator(".u-over").bounding_box()
    page.mouse.move(over["x"] + x, over["y"] + y)
    expect(box.locator(".fi-value")).to_contain_text("step 40 · ")
    expect(box.locator(".fi-value")).to_contain_text(f" · {row[b]:,} of {row.sum():,} values")
    # zooming the std chart zooms the histogram's steps too
    plot_value(page, field_index(page, "std"), "(u.setSelect({left: 10, top: 0, width: 60, height: 10}), 0)")
    lo_x, hi_x = plot_value(page, i, "[u.scales.x.min, u.scales.x.max]")
    assert 0 < hi_x - lo_x < 119
    assert_clean(page)
