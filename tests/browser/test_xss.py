"""User-controlled names (module names, sow names, class names, returned strings) are text,
never markup, in the static HTML export and in the widget (shown in marimo)."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector import capture as C
from browser_helpers import (
    HERE, STATUS, assert_clean, detail, open_marimo_app, start_marimo_server, stop_marimo_server, tree_search,
    widget_tab,
)

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.__pwned=1</script>"
CLASS = "<img src=x onerror=window.__pwned=2>"
ROOT = "Evil</title><script>window.__pwned=3</script>"


class Leaky(nn.Module):
    @nn.compact
    def __call__(self, x):
        # flax allows any string as a submodule name; a sow may not reuse a child's name
        # in the same scope (its intermediates subtree is a dict), so names differ here.
        x = nn.Dense(3, name="<b>dense</b>")(x)
        self.sow("intermediates", IMG, x)
        self.sow("intermediates", SCRIPT, x * 2)
        return x

    def describe(self):
        return SCRIPT  # a non-array output: captured as an opaque "str: '...'" value


Leaky.__name__ = Leaky.__qualname__ = CLASS  # the module type is shown next to each call


class Evil(nn.Module):
    @nn.compact
    def __call__(self, x):
        leaky = Leaky(name=IMG)
        leaky.describe()
        return leaky(x)


Evil.__name__ = Evil.__qualname__ = ROOT  # ends up in the page <title> and header


@pytest.fixture(scope="module")
def evil_html(tmp_path_factory):
    model, x = Evil(), jnp.ones((2, 4))
    variables = fi.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model, capture_intermediates=C.calls | C.methods("describe"))(
        variables, x)
    keys = [c.key for c in insp.calls]
    assert f"{IMG}:{IMG}[0]" in keys and f"{IMG}:describe[0]" in keys, keys
    path = tmp_path_factory.mktemp("xss") / "evil.html"
    page_html = insp.to_html(path)
    assert IMG not in page_html and SCRIPT not in page_html and "<b>" not in page_html
    return path


def test_names_are_text_not_markup(page, evil_html):
    from playwright.sync_api import expect

    page.goto(evil_html.as_uri())
    page.wait_for_load_state("load")
    for tab in ("variables", "mutations", "intermediates", "binding"):
        page.locator(f"label[data-tab={tab}]").click()
        page.wait_for_timeout(50)  # give any injected handler a chance to run
    # open everything, so that nothing is hidden behind a closed <details>
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")

    assert page.dialogs == [], page.dialogs
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 0
    assert page.locator("b").count() == 0
    assert page.title() == f"{ROOT} inspection"

    panel = page.locator("div.fi-panel[data-panel=intermediates]")
    page.locator("label[data-tab=intermediates]").click()
    expect(panel.locator("summary .fi-name", has_text=f"{IMG}:{IMG}").first).to_have_text(
        re.compile(rf"#\d+ {re.escape(IMG)}:{re.escape(IMG)}(\[0\])?"))
    sown = fi.format_key((IMG,), SCRIPT)  # the key grammar escapes the '/' of '</script>' (a substring: "[0]" or not)
    expect(panel.locator("summary .fi-name", has_text=sown)).to_be_visible()
    expect(panel.get_by_text(f"({CLASS})").first).to_be_visible()
    expect(panel.get_by_text(f"str: '{SCRIPT}'")).to_be_visible()

    page.locator("label[data-tab=variables]").click()
    variables = page.locator("div.fi-panel[data-panel=variables]")
    expect(variables.locator(".fi-name", has_text=IMG).first).to_have_text(IMG)
    expect(variables.locator(".fi-name", has_text=IMG).first).to_be_visible()
    expect(variables.get_by_text("<b>dense</b>", exact=True)).to_be_visible()
    expect(page.locator(".fi-head")).to_contain_text(f"Inspection: apply {ROOT}")

    assert_clean(page)  # no request for "x", no console errors, no dialogs
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_widget_names_are_text_not_markup(page, tmp_path):
    """The widget (one anywidget, here in marimo): every tab's rows, the status line and a detail."""
    from playwright.sync_api import expect

    server = start_marimo_server(HERE / "marimo" / "xss_app.py", tmp_path)
    try:
        w = open_marimo_app(page, server, 1).first
        expect(w.locator(STATUS)).to_contain_text(f"Inspection: apply {ROOT}")
        for tab in ("variables", "mutations", "intermediates", "binding", "output"):
            widget_tab(w, tab)
            page.wait_for_timeout(50)  # give any injected handler a chance to run
        inter = widget_tab(w, "intermediates")
        expect(inter.locator(".fi-name", has_text=f"{IMG}:{IMG}").first).to_be_visible()
        expect(inter.get_by_text(f"({CLASS})").first).to_be_visible()
        inter.locator(".fi-leaf .fi-name", has_text=IMG).first.click()
        body = detail(w).locator("body")
        expect(body).to_contain_text(IMG)  # the detail's title, as text
        assert detail(w).locator("img").count() == 0
        widget_tab(w, "variables")
        matches = tree_search(w, "dense")  # nested below the <img> module: found by search
        expect(matches.locator(".fi-name", has_text="<b>dense").first).to_be_visible()  # its "/" is quoted in a path
        assert page.dialogs == [], page.dialogs
        assert page.evaluate("typeof window.__pwned") == "undefined"
        for tag in ("img", "script", "b"):
            assert w.locator(tag).count() == 0, tag
        assert not page.page_errors, page.page_errors
    finally:
        stop_marimo_server(server)
