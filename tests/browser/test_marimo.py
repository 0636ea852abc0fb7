"""The notebook widget in marimo (``marimo edit --headless`` on 127.0.0.1, Debian Chromium): each
displayed inspection is one anywidget, which marimo draws itself (no ipywidgets manager there).
Its tabs switch, a tree opens by a message round trip to the kernel, a search answers, a leaf's
detail shows treescope drawn (its script runs in the pane's iframe), and the jump button selects
the first non-finite call. The app: tests/browser/marimo/demo_app.py."""

from __future__ import annotations

import pytest

from browser_helpers import (
    HERE, JUMP, STATUS, detail, open_marimo_app, start_marimo_server, stop_marimo_server, tree_click_leaf,
    tree_expand, tree_search, wait_treescope_drawn, widget_tab,
)

APP = HERE / "marimo" / "demo_app.py"


@pytest.fixture(scope="module")
def marimo_server(tmp_path_factory):
    server = start_marimo_server(APP, tmp_path_factory.mktemp("marimo"))
    yield server
    stop_marimo_server(server)


def test_widget_in_marimo(page, marimo_server):
    from playwright.sync_api import expect

    widgets = open_marimo_app(page, marimo_server, 2)
    demo, nan = widgets.nth(0), widgets.nth(1)
    expect(demo.locator(STATUS)).to_contain_text("Inspection: apply AutoEncoder")
    expect(nan.locator(STATUS)).to_contain_text("Inspection: apply LogNet")
    # marimo shows the widget, not the static fallback
    expect(page.locator(".fi-root")).to_have_count(0)

    # the tabs, Variables open; another tab's tree shows when its tab is clicked
    expect(demo.locator(".fi-tab")).to_have_text(["Variables", "Mutations", "Intermediates", "Costs", "Binding",
                                                  "Output"])
    expect(demo.locator(".fi-tab.fi-tab-on")).to_have_text("Variables")
    mutations = widget_tab(demo, "mutations")
    expect(mutations.locator(".fi-row").first).to_contain_text("batch_stats")
    expect(demo.locator(".fi-tab.fi-tab-on")).to_have_text("Mutations")
    intermediates = widget_tab(demo, "intermediates")
    expect(intermediates.locator(".fi-depth-chart svg")).to_be_visible()  # the depth figure above the tree
    widget_tab(demo, "variables")

    # a node opens: its children come from the kernel (a message naming the tree, and its reply)
    kids = tree_expand(demo, "params/encoder/Dense_0")
    expect(kids).to_contain_text("kernel")
    expect(kids).to_contain_text("float32[8,32]")
    matches = tree_search(demo, "params/**/kernel")
    expect(matches.locator(".fi-count")).to_have_text("4 matches")
    demo.locator("input.fi-search:visible").fill("")

    # a leaf's detail: statistics, then the array drawn by treescope inside the pane
    tree_click_leaf(demo, "params/encoder/Dense_0/kernel")
    pane = detail(demo)
    expect(pane.locator("body")).to_contain_text("variables: params/encoder/Dense_0/kernel")
    wait_treescope_drawn(demo, "axis 0: 8")

    # the red button: the first non-finite call, selected in the Intermediates tab, its detail shown
    jump = nan.locator(JUMP)
    expect(jump).to_contain_text("first non-finite: d3")
    jump.click()
    expect(nan.locator(".fi-tab.fi-tab-on")).to_have_text("Intermediates")
    selected = nan.locator(".fi-list:visible .fi-row.fi-sel")
    expect(selected).to_have_attribute("data-id", "#2")
    expect(selected.locator(".fi-fact")).to_contain_text("nan")  # the key fact, in its own span
    expect(detail(nan).locator("body")).to_contain_text("intermediates: d3")
    wait_treescope_drawn(nan, "axis 0: 2")  # the float32[2,2] of NaN
    assert not page.page_errors, page.page_errors
