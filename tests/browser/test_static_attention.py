"""``AttentionMaps.to_html`` opened from file:// in Chromium with the network blocked: the grid of heads,
a click on a head opens its full map with token labels and a readout of the weight under the pointer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from browser_helpers import assert_clean

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synthetic import attention_inspection

TOKENS = ["<bos>", "the", "<script>alert(1)</script>", "\"cat\"", "sat", "'on'"]


@pytest.fixture(scope="module")
def attention_page(tmp_path_factory):
    insp = attention_inspection(layers=2, heads=3, seq=len(TOKENS), seed=1)
    maps = insp.attention(tokens=TOKENS)
    path = tmp_path_factory.mktemp("static") / "attention.html"
    maps.to_html(path)
    return path, maps


def test_grid_then_full_map_offline(page, attention_page):
    from playwright.sync_api import expect

    path, maps = attention_page
    requests = []

    def block(route):
        requests.append(route.request.url)
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", block)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    thumbs = page.locator("button.fi-attn-thumb")
    expect(thumbs).to_have_count(6)
    expect(page.locator(".fi-attn-layer-title").first).to_contain_text("Block_0/attn")
    first = maps.layers[1].heads[2]
    target = thumbs.nth(5)
    assert f"entropy {first.entropy:.4g} nats" in target.get_attribute("title")

    target.click()
    full = page.locator(".fi-attn-map")
    expect(full).to_be_visible()
    expect(full.locator(".fi-attn-map-title")).to_contain_text("Block_1/attn head 2")
    for token in TOKENS:  # as text, not markup
        expect(full.locator(".fi-attn-key", has_text=token).first).to_be_attached()
        expect(full.locator(".fi-attn-query", has_text=token).first).to_be_attached()
    assert page.evaluate("window.__xss === undefined && document.querySelectorAll('.fi-attn script').length") == 0

    canvas = full.locator("canvas.fi-attn-map-img")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    q, k = 3, 1  # hover the cell of query 3, key 1
    n = len(TOKENS)
    canvas.hover(position={"x": (k + 0.5) * box["width"] / n, "y": (q + 0.5) * box["height"] / n})
    readout = full.locator(".fi-attn-readout")
    expected = float(maps.layers[1].map(2)[q, k])
    expect(readout).to_contain_text(f'query {q} "\\"cat\\"" -> key {k} "the"')
    shown = float(readout.text_content().rsplit(":", 1)[1])
    assert abs(shown - expected) <= 1e-4 * max(1.0, expected), (shown, expected)
    assert all(u.startswith("file://") for u in requests), requests
    assert_clean(page)
