"""The widget's Gradients tab in a live JupyterLab: its rows from the kernel, a gradient's detail,
and the jump to the first non-finite gradient, also when that row is two levels down and past
the first page (the view opens the rows on the way)."""

from __future__ import annotations

import re

from browser_helpers import (
    GRAD_JUMP, NOTEBOOKS, detail, run_notebook_in_lab, tree_click_leaf, tree_expand, tree_level, widget_tab,
)

NOTEBOOK = NOTEBOOKS / "gradients.ipynb"


def in_list_view(row) -> bool:
    return row.evaluate("""el => { const l = el.closest('.fi-list').getBoundingClientRect(),
        r = el.getBoundingClientRect(); return r.height > 0 && r.top >= l.top && r.bottom <= l.bottom; }""")


def test_gradients_tab_in_lab(page, lab_server):
    from playwright.sync_api import expect

    nb = run_notebook_in_lab(page, lab_server, NOTEBOOK)
    grad = nb.output(1)
    expect(grad.locator(".fi-status")).to_contain_text(re.compile(r"Inspection: \w+ GradNaNNet"))
    expect(grad.locator(".fi-tab")).to_have_text(["Variables", "Mutations", "Intermediates", "Costs", "Gradients",
                                                  "Binding", "Output"])
    widget_tab(grad, "gradients")
    expect(grad.locator(".fi-heading:visible")).to_contain_text("gradients: loss 0, 4 of 4 calls with gradients")

    # the calls' gradient norms are open at first; the scales arrive from the kernel when opened
    calls = tree_level(grad).locator(".fi-row[data-id='activation gradients'] + .fi-kids")
    expect(calls.locator(".fi-row[data-id='g#2']")).to_contain_text("|grad| 2")
    # the norms as real bars: one fixed-width column, one baseline, widths from the rows' "bar"
    bars = calls.locator(":scope > div > .fi-row .fi-bar")
    expect(bars).to_have_count(3)  # g#0 has a zero norm: no position on a log axis
    boxes = bars.evaluate_all("""els => els.map(e => { const r = e.getBoundingClientRect(),
        f = e.firstElementChild.getBoundingClientRect(); return [Math.round(r.left), Math.round(r.width),
        Math.round(f.left), f.width / r.width, e.title]; })""")
    assert len({b[0] for b in boxes}) == 1 and len({b[1] for b in boxes}) == 1, boxes  # a column
    assert all(abs(b[2] - b[0]) <= 1 for b in boxes) and all(0.2 < b[3] < 0.4 for b in boxes), boxes  # one baseline
    assert all(b[4].startswith("|grad|") for b in boxes), boxes  # its hover text
    scales = tree_expand(grad, "update scales")
    expect(scales.locator(".fi-row").first).to_contain_text("params/d1/kernel")
    expect(scales.locator(".fi-row").first).to_contain_text("ratio 0")

    # a parameter's gradient, then an activation's: each shows its statistics and array
    tree_click_leaf(grad, "parameter gradients/params/d2/kernel")
    pane = detail(grad).locator("body")
    expect(pane).to_contain_text("gradients: params/d2/kernel")
    expect(pane).to_contain_text("float32[4,2]")
    tree_click_leaf(grad, ["activation gradients", re.compile(r"^#1 root(:__call__)?(\[0\])?$"), "0"])
    expect(pane).to_contain_text(re.compile(r"gradients: d loss / d root(:__call__)?(\[0\])? 0"))
    expect(detail(grad).locator("svg.fi-hist")).to_have_count(1)

    # the red button: the first non-finite gradient in backward order
    jump = grad.locator(GRAD_JUMP)
    expect(jump).to_contain_text("first non-finite gradient (backward order): d1")
    jump.click()
    selected = grad.locator(".fi-list:visible .fi-row.fi-sel")
    expect(selected).to_have_attribute("data-id", "g#0/grad")
    expect(selected).to_be_visible()
    expect(grad.locator(".fi-tab.fi-tab-on")).to_have_text("Gradients")
    expect(detail(grad).locator("body")).to_contain_text("gradients: d loss / d d1")

    # past the first page, two levels down: the view asks for the rows on the way and opens them
    wide = nb.output(2)
    expect(wide.locator(".fi-status")).to_contain_text(re.compile(r"Inspection: \w+ Wide"))
    assert wide.locator(".fi-row[data-id='g#300']").count() == 0  # not loaded yet
    wide.locator(GRAD_JUMP).click()
    selected = wide.locator(".fi-list:visible .fi-row.fi-sel")
    expect(selected).to_have_attribute("data-id", "g#300/grad")
    expect(selected).to_be_visible()
    selected.element_handle().wait_for_element_state("stable")  # the list has scrolled to it
    assert in_list_view(selected)
    expect(wide.locator(".fi-list:visible .fi-row[data-id='g#300']")).to_have_count(1)  # each row once
    assert not page.page_errors, page.page_errors
