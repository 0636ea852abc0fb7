"""The notebook widget in a live JupyterLab: lazy tree, search, leaf detail from the kernel,
first-non-finite jump, bounded DOM for 5,000 leaves, live status (one notebook, to stay fast);
then one widget displayed twice (its views share state, not the rows each asked for)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import inspector
from browser_helpers import (
    DETAIL, JUMP, NOTEBOOKS, detail, run_notebook_in_lab, tree_click_leaf, tree_expand, tree_search,
    wait_treescope_drawn, widget_tab,
)

NOTEBOOK = NOTEBOOKS / "demo_inspection.ipynb"
TWO_VIEWS = NOTEBOOKS / "two_views.ipynb"
# An element's text on a dark background, readable (WCAG AA); the contrast seen last is in window.__fiContrast.
READABLE_ON_DARK = """el => {
    const lum = c => { const [r, g, b] = c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map(v => {
        v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
    let bg = el, color = getComputedStyle(el).color;
    while (bg && getComputedStyle(bg).backgroundColor.match(/rgba\\(.*, 0\\)|transparent/)) bg = bg.parentElement;
    const [a, b] = [lum(color), lum(getComputedStyle(bg || document.body).backgroundColor)];
    window.__fiContrast = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    return b < 0.2 && window.__fiContrast >= 4.5;
}"""


def test_widget_views_in_lab(page, lab_server):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    nb = run_notebook_in_lab(page, lab_server, NOTEBOOK)
    expect(nb.output(1)).to_contain_text(inspector.__version__)

    # the demo: a widget (not the static fallback) with status, tabs and trees
    demo = nb.output(2)
    expect(demo.locator(".fi-status")).to_contain_text("Inspection: apply AutoEncoder")
    expect(demo.locator(".fi-status")).to_contain_text("compile")
    expect(demo).not_to_contain_text("Error displaying widget")
    expect(demo.locator(".fi-root")).to_have_count(0)  # the HTML fallback is not what Lab shows

    # expand a node: its children arrive from the kernel
    kids = tree_expand(demo, "params/encoder/Dense_0")
    expect(kids).to_contain_text("kernel")
    expect(kids).to_contain_text("float32[8,32]")

    # search by glob
    matches = tree_search(demo, "params/**/kernel")
    expect(matches.locator(".fi-count")).to_have_text("4 matches")
    expect(matches).to_contain_text("params/decoder/Dense_1/kernel")
    demo.locator("input.fi-search:visible").fill("")

    # one model per displayed object: the whole output is one anywidget view (no core ipywidgets)
    expect(demo.locator(".fi-widget")).to_have_count(1)
    expect(demo.locator(".widget-tab, .widget-button, .widget-output, .jupyter-widget-Tab")).to_have_count(0)
    # the tabs, in the static export's order, Variables open
    tabs = demo.locator(".fi-tab").all_inner_texts()
    assert tabs == ["Variables", "Mutations", "Intermediates", "Costs", "Binding", "Output"], tabs
    expect(demo.locator(".fi-tab.fi-tab-on")).to_have_text("Variables")

    # click a leaf: its array view arrives from the kernel (treescope, run inside the pane's iframe)
    tree_click_leaf(demo, "params/encoder/Dense_0/kernel")
    pane = detail(demo)
    expect(pane.locator("body")).to_contain_text("variables: params/encoder/Dense_0/kernel")
    expect(pane.locator("body")).to_contain_text("float32[8,32]")
    expect(pane.locator("treescope-container")).to_have_count(1)
    wait_treescope_drawn(demo, "axis 0: 8")  # treescope drew the array (its script ran; shadow DOM)
    height = demo.locator(f"{DETAIL} iframe").evaluate("f => f.getBoundingClientRect().height")
    assert height > 100, height  # sized to its content

    # names start at the same x whatever the expand arrow; the detail follows its tab
    xs = demo.locator(".fi-list:visible > div > .fi-row .fi-name").evaluate_all(
        "els => els.map(e => Math.round(e.getBoundingClientRect().left))")
    assert len(set(xs)) == 1, xs
    widget_tab(demo, "mutations")
    expect(demo.locator(DETAIL)).to_be_hidden()  # a leaf of another tab: not shown here
    widget_tab(demo, "variables")
    expect(demo.locator(DETAIL)).to_be_visible()

    shots = os.environ.get("INSPECTOR_SCREENSHOTS")  # a folder: write the README's screenshots there
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        demo.screenshot(path=f"{shots}/variables.png")
        widget_tab(demo, "mutations")
        demo.locator(".fi-row", has_text="encoder/BatchNorm_0").first.wait_for(state="visible")
        demo.screenshot(path=f"{shots}/mutations.png")
        widget_tab(demo, "binding")
        demo.locator(".fi-row", has_text="encoder/BatchNorm_0:__call__").first.wait_for(state="visible")
        demo.screenshot(path=f"{shots}/binding.png")

    # NaN model: the red button jumps to the first non-finite call
    nan = nb.output(3)
    jump = nan.locator(JUMP)
    expect(jump).to_contain_text("first non-finite: d3")
    expect(nan.locator(".fi-row.fi-bad .fi-fact").first).to_contain_text("!!")  # the key fact, in full
    jump.click()
    expect(nan.locator(".fi-tab.fi-tab-on")).to_have_text("Intermediates")
    selected = nan.locator(".fi-row.fi-sel")
    expect(selected).to_have_attribute("data-id", "#2")
    expect(selected).to_be_visible()
    fact = selected.locator(".fi-fact")
    expect(fact).to_contain_text("nan")
    assert fact.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # not cut off by the ellipsis
    expect(nan.locator(".fi-depth-chart svg")).to_be_visible()  # the depth figure, above the tree
    expect(detail(nan).locator("body")).to_contain_text("intermediates: d3")
    if shots:
        detail(nan).locator("treescope-container").first.wait_for(state="attached")
        nan.screenshot(path=f"{shots}/intermediates.png")

    # the first NaN's operation: the button re-runs the call in the kernel, then the operation and its line show
    find = nan.locator(".fi-origin-find")
    expect(find).to_have_text("Find the operation")
    find.click()
    line = nan.locator(".fi-origin-line")
    expect(line).to_contain_text("first NaN born at `log` in ")
    expect(line).to_have_text(re.compile(r"`log` in [^ ]+\.py:\d+ \(LogNet\.__call__\)"))
    expect(find).to_be_hidden()
    expect(nan.locator(".fi-origin-text")).to_contain_text("operand 0: float32[2,4] min -8.8158")

    # the Costs tab: computed when opened, a row per module with its FLOPs and share; sorted by FLOPs on request
    costs = widget_tab(nan, "costs")
    expect(costs.locator(".fi-heading")).to_contain_text("costs: 180 FLOPs")
    expect(costs.locator(".fi-row[data-id='d2']")).to_contain_text("72 FLOPs (40.0%)")
    names = costs.locator(".fi-row[data-id='/'] + .fi-kids > div > .fi-row .fi-name")
    expect(names).to_have_text(["d1", "d2", "d3"])
    costs.locator(".fi-costs-order").click()
    expect(names).to_have_text(["d2", "d1", "d3"])
    widget_tab(nan, "intermediates")  # back where the jump left it (the dark-theme check below reads its selection)

    # 5,000 leaves: first paint stays small
    wide = nb.output(4)
    expect(wide.locator(".fi-status")).to_contain_text("Inspection: apply Holder")
    nodes = wide.evaluate("el => el.querySelectorAll('*').length")
    print(f"DOM nodes in the output of a 5,000-leaf inspection at first paint: {nodes}")
    assert nodes <= 2000, nodes
    expect(wide.locator(".fi-row").first).to_be_visible()

    # live status ends with the timings
    expect(nb.output(5).locator(".fi-status")).to_contain_text("done in")

    # dark theme: the trees follow JupyterLab's colours and stay readable
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator("li.lm-Menu-item", has_text=re.compile(r"^Theme$")).hover()
    page.get_by_role("menuitem", name="JupyterLab Dark", exact=True).click()
    page.locator("body[data-jp-theme-light='false']").wait_for(state="attached")
    # the theme's CSS variables arrive in steps: wait for its dark background and readable text on it
    with contextlib.suppress(PlaywrightTimeout):  # the assertion below says what was seen last
        page.wait_for_function(READABLE_ON_DARK, arg=demo.locator(".fi-name").first.element_handle(), polling=100)
    contrast = page.evaluate("window.__fiContrast")
    assert contrast >= 4.5, contrast  # WCAG AA for text
    # dark: the selected row stays readable, and the detail pane (treescope's page) follows the theme
    selected_name = nan.locator(".fi-row.fi-sel .fi-name")
    with contextlib.suppress(PlaywrightTimeout):  # the assertion below says what was seen last
        page.wait_for_function(READABLE_ON_DARK, arg=selected_name.element_handle(), polling=100, timeout=20_000)
    seen = selected_name.evaluate("""e => [getComputedStyle(e).color,
        getComputedStyle(e.closest('.fi-row')).backgroundColor, e.closest('.fi-row').className]""")
    assert selected_name.evaluate(READABLE_ON_DARK), (page.evaluate("window.__fiContrast"), seen)
    body = detail(nan).locator("body")
    dark_body = """b => { const c = getComputedStyle(b).backgroundColor.match(/[0-9.]+/g).map(Number);
        return (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255 < 0.3; }"""
    for _ in range(100):  # the pane is redrawn with the theme's colours once they have arrived
        if body.evaluate(dark_body):
            break
        page.wait_for_timeout(100)
    assert body.evaluate(dark_body), body.evaluate("b => getComputedStyle(b).backgroundColor")
    if shots:
        nan.screenshot(path=f"{shots}/dark.png")
    assert not page.page_errors, page.page_errors


def names(level):
    return level.locator(":scope > div > .fi-row .fi-name").all_inner_texts()


def test_one_widget_shown_twice(page, lab_server):
    from playwright.sync_api import expect

    nb = run_notebook_in_lab(page, lab_server, TWO_VIEWS)
    views = nb.output(1).locator(".fi-widget")
    expect(views).to_have_count(2)
    a, b = views.nth(0), views.nth(1)
    for view in (a, b):
        expect(view.locator(".fi-status")).to_contain_text("Inspection: apply AutoEncoder")
        expect(view.locator(".fi-row", has_text="encoder").first).to_be_visible()
    dense = ".fi-row[data-id='params/encoder/Dense_0']"
    rows_in_b = b.locator(".fi-row").count()

    # Expanding in A: A's rows arrive in A only. Every view's listener runs on each reply, in
    # the same dispatch, so once A shows the rows, B has already seen (and ignored) them.
    kids_a = tree_expand(a, "params/encoder/Dense_0")
    assert names(kids_a) == ["bias", "kernel"]
    expect(b.locator(dense)).to_have_count(0)
    assert b.locator(".fi-row").count() == rows_in_b

    # Expanding the same node in B: each view shows the children exactly once.
    kids_b = tree_expand(b, "params/encoder/Dense_0")
    assert names(kids_b) == ["bias", "kernel"]
    assert names(kids_a) == ["bias", "kernel"]
    for view in (a, b):
        expect(view.locator(dense)).to_have_count(1)
        expect(view.locator(".fi-row[data-id='params/encoder/Dense_0/kernel']")).to_have_count(1)

    # A search in A answers A; B keeps its tree.
    expect(tree_search(a, "params/**/kernel").locator(".fi-count")).to_have_text("4 matches")
    expect(b.locator(".fi-count")).to_have_count(0)
    expect(b.locator(dense)).to_have_count(1)
    a.locator("input.fi-search:visible").fill("")

    # The selection is shared state: a click in B selects the leaf in both views.
    tree_click_leaf(b, "params/encoder/Dense_0/kernel")
    for view in (a, b):
        expect(detail(view).locator("body")).to_contain_text("variables: params/encoder/Dense_0/kernel")
    expect(b.locator(".fi-row.fi-sel")).to_have_attribute("data-id", "params/encoder/Dense_0/kernel")
    tree_expand(a, "params/encoder/Dense_0")  # A's search was cleared: its tree is fresh
    expect(a.locator(".fi-row.fi-sel")).to_have_attribute("data-id", "params/encoder/Dense_0/kernel")

    # The Output tab: what the call returned, a leaf like any other.
    widget_tab(a, "output")
    output = a.locator(".fi-list:visible .fi-row[data-id='output']")
    expect(output).to_contain_text("float32[4,8]")
    output.locator(".fi-name").click()
    expect(detail(a).locator("body")).to_contain_text("output: output")

    # Selected before display, past the first page: the view asks for the rows up to it and scrolls its list.
    wide = nb.output(2)
    selected = wide.locator(".fi-list:visible .fi-row.fi-sel")
    expect(selected).to_have_attribute("data-id", "#150")
    expect(wide.locator(".fi-list:visible .fi-row[data-id='#150']")).to_have_count(1)
    in_view = selected.evaluate("""el => { const l = el.closest('.fi-list').getBoundingClientRect(),
        r = el.getBoundingClientRect(); return r.top >= l.top && r.bottom <= l.bottom; }""")
    assert in_view
    assert not page.page_errors, page.page_errors
