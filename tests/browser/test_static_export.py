"""``Inspection.to_html`` opened from file:// in Chromium: no script, no network, CSS-only tabs."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from browser_helpers import assert_clean


@pytest.fixture(scope="module")
def demo_html(tmp_path_factory):
    from inspector.demo import demo_inspection

    path = tmp_path_factory.mktemp("static") / "demo.html"
    demo_inspection().to_html(path)
    return path


class Log(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.log(x)  # NaN for the negative inputs it gets below


class NanNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = -jnp.abs(nn.Dense(4, name="first")(x)) - 1.0
        x = Log(name="log")(x)
        return nn.Dense(2, name="after")(x)


@pytest.fixture(scope="module")
def nan_html(tmp_path_factory):
    model, x = NanNet(), jnp.ones((2, 3))
    variables = fi.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    first = insp.first_nonfinite()
    assert first is not None and first.key == "log:__call__[0]", [c.key for c in insp.calls]
    path = tmp_path_factory.mktemp("static") / "nan.html"
    insp.to_html(path)
    return path, first.order


def open_file(page, path):
    page.goto(path.as_uri())
    page.wait_for_load_state("load")


def test_demo_renders_offline_and_folds(page, demo_html):
    from playwright.sync_api import expect

    open_file(page, demo_html)
    expect(page.locator(".fi-head")).to_contain_text("Inspection: apply AutoEncoder")
    expect(page.locator("div.fi-panel[data-panel=variables]")).to_be_visible()

    node = page.locator('details[data-path="params/encoder/Dense_0"]')
    leaf = node.locator(":scope > .fi-leaf", has_text="kernel")
    expect(node).not_to_have_attribute("open", "")
    expect(leaf).to_be_hidden()
    node.locator(":scope > summary").click()
    expect(node).to_have_attribute("open", "")
    expect(leaf).to_be_visible()
    expect(leaf).to_contain_text("float32[8,32]")

    assert page.evaluate("document.scripts.length") == 0
    assert_clean(page)
    assert not page.bad_responses


def test_demo_tabs(page, demo_html):
    from playwright.sync_api import expect

    open_file(page, demo_html)
    panels = {n: page.locator(f"div.fi-panel[data-panel={n}]") for n in ("variables", "mutations", "intermediates")}

    page.locator("label[data-tab=mutations]").click()
    expect(panels["mutations"]).to_be_visible()
    expect(panels["variables"]).to_be_hidden()
    expect(panels["mutations"].get_by_text("batch_stats", exact=True)).to_be_visible()

    page.locator("label[data-tab=intermediates]").click()
    expect(panels["intermediates"]).to_be_visible()
    expect(panels["mutations"]).to_be_hidden()
    expect(panels["intermediates"].locator("summary", has_text="#0 encoder/Dense_0 (Dense)")).to_be_visible()

    page.locator("label[data-tab=variables]").click()
    expect(panels["variables"]).to_be_visible()
    expect(panels["intermediates"]).to_be_hidden()
    assert_clean(page)


def test_first_nonfinite_link_navigates_to_call(page, nan_html):
    from playwright.sync_api import expect

    path, order = nan_html
    page.set_viewport_size({"width": 900, "height": 160})  # so that following the link has to scroll
    open_file(page, path)
    page.locator("label[data-tab=intermediates]").click()
    link = page.locator(f'a[href="#fi-call-{order}"]')
    expect(link).to_be_visible()
    expect(link).to_have_text("log:__call__[0]")
    expect(link.locator("xpath=..")).to_contain_text("first non-finite")

    target = page.locator(f"#fi-call-{order}")
    expect(target).to_have_class(re.compile(r"\bfi-first\b"))
    expect(target.locator("summary")).to_contain_text(f"#{order} log (Log)")
    assert page.locator(".fi-first").count() == 1
    # later NaN calls are marked bad but are not "first"
    expect(page.locator("details.fi-bad summary", has_text=re.compile(r"#\d+ after \("))).to_have_count(1)

    link.click()
    page.wait_for_url(re.compile(rf"#fi-call-{order}$"))
    assert page.evaluate(f"document.querySelector('#fi-call-{order}').matches(':target')")
    expect(target).to_be_in_viewport()
    expect(target.locator("summary")).to_be_in_viewport()
    # The first non-finite call is rendered open (a link to a closed <details> would not open it).
    assert page.evaluate(f"document.querySelector('#fi-call-{order}').open")
    expect(target.locator(".fi-leaf.fi-bad")).to_be_visible()
    expect(target.locator(".fi-leaf.fi-bad")).to_contain_text("nan")
    assert_clean(page)


def test_costs_and_origin_render_offline(page, tmp_path):
    """A page written after ``insp.costs()`` and ``insp.nonfinite_origin()``: the Costs tab and the origin line,
    from file:// with every network request aborted."""
    from playwright.sync_api import expect

    model, x = NanNet(), jnp.ones((2, 3))
    variables = fi.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    costs = insp.costs(memory=False)
    origin = insp.nonfinite_origin()
    path = tmp_path / "costs.html"
    insp.to_html(path)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.route(re.compile(r"^(https?|wss?)://"), lambda route: route.abort())
    open_file(page, path)
    expect(page.locator(".fi-origin")).to_contain_text(f"first NaN born at `log` in {origin.where}")
    panel = page.locator("div.fi-panel[data-panel=costs]")
    expect(panel).to_be_hidden()
    page.locator("label[data-tab=costs]").click()
    expect(panel).to_be_visible()
    expect(panel.locator(".fi-title")).to_contain_text(f"costs: {costs.flops:.0f} FLOPs")
    for name in ("first", "log", "after"):
        m = costs.module(name)
        row = panel.locator("summary, div.fi-leaf", has_text=re.compile(rf"\] {name} \(")).first
        expect(row).to_be_visible()
        expect(row).to_contain_text(f"{m.flops:.0f} FLOPs ({100 * m.flops / costs.flops:.1f}%)")
    bar = panel.locator(".fi-bar").first
    assert bar.evaluate("b => b.getBoundingClientRect().width") > 20  # drawn by CSS alone
    assert page.evaluate("document.scripts.length") == 0
    assert all(u.startswith("file:") for u in requests), requests
    assert_clean(page)
