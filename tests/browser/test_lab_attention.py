"""The widget's Attention tab in a live JupyterLab: it appears for a model that sows its attention weights,
the grid of heads arrives from the kernel when the tab is opened, and a click on a head shows its full map
(fetched then) with the token labels given to ``insp.attention(tokens=...)`` and a readout of the weight."""

from __future__ import annotations

import re

from browser_helpers import NOTEBOOKS, run_notebook_in_lab, widget_tab

NOTEBOOK = NOTEBOOKS / "attention.ipynb"
TOKENS = ["<bos>", "the", "<b>cat</b>", '"sat"', "on"]


def test_attention_tab_in_lab(page, lab_server):
    from playwright.sync_api import expect

    nb = run_notebook_in_lab(page, lab_server, NOTEBOOK)
    out = nb.output(1)
    expect(out.locator(".fi-status")).to_contain_text(re.compile(r"Inspection: \w+ Tiny"))
    expect(out.locator(".fi-tab[data-tab='attention']")).to_have_text("Attention (2 layers)")
    assert out.locator(".fi-attn-thumb").count() == 0  # nothing sent before the tab is opened

    panel = widget_tab(out, "attention")
    thumbs = panel.locator("button.fi-attn-thumb")
    expect(thumbs).to_have_count(4)
    expect(panel.locator(".fi-attn-layer-title").first).to_contain_text("block_0/attn")
    expect(panel.locator(".fi-attn-tokens")).to_contain_text('2=<b>cat</b> 3="sat"')  # as text, not markup
    assert panel.locator(".fi-attn-tokens b").count() == 0
    assert "entropy" in thumbs.nth(3).get_attribute("title")
    assert panel.locator(".fi-attn-map canvas").count() == 0  # no full map until a head is clicked

    thumbs.nth(3).click()
    full = panel.locator(".fi-attn-map")
    expect(full.locator(".fi-attn-map-title")).to_contain_text("block_1/attn head 1")
    expect(full.locator("canvas.fi-attn-map-img")).to_be_visible()
    expect(full.locator(".fi-attn-key")).to_have_text(TOKENS)
    expect(full.locator(".fi-attn-query")).to_have_text(TOKENS)
    canvas = full.locator("canvas.fi-attn-map-img")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    canvas.hover(position={"x": 1.5 * box["width"] / 5, "y": 2.5 * box["height"] / 5})  # query 2, key 1
    expect(full.locator(".fi-attn-readout")).to_contain_text(
        re.compile(r'query 2 "<b>cat</b>" -> key 1 "the": 0\.\d+'))
    assert not page.page_errors, page.page_errors
