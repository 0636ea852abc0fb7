"""Kernel side of the notebook widget: lazy rows, search, detail, status, jump; bounded cost."""

import json
import os
import sys

import flax.linen as nn
import ipywidgets
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector.demo import demo_inspection
from inspector.views.rows import PAGE
from inspector.views.widgets import InspectionWidget, preview_index, show
from models import LogNet

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from synthetic import wide_inspection  # noqa: E402


def sent(tree):
    """Collects what ``tree`` sends to the browser."""
    out = []
    tree.send = lambda content, buffers=None: out.append(content)
    return out


def msg(tree, **content):
    tree._on_msg(tree, content, None)


def test_first_render_is_bounded_for_5000_leaves():
    before = len(ipywidgets.widgets.widget._instances)
    w = InspectionWidget(wide_inspection(5000))
    models = len(ipywidgets.widgets.widget._instances) - before
    assert models <= 25  # fixed set of models, not one per leaf
    rows = [tr.initial for tr in w.trees.values()]
    assert sum(len(json.dumps(r)) for r in rows) < 150_000

    def count(rs):
        return sum(1 + count(r.get("children", [])) for r in rs)

    assert sum(count(r) for r in rows) <= 320
    assert w.trees["intermediates"].initial[-1]["more"]  # the rest is one "... more" row


def test_children_are_sent_when_opened_and_paginated():
    w = InspectionWidget(wide_inspection(5000))
    tree = w.trees["variables"]
    params = next(r for r in tree.initial if r["id"] == "params")
    assert len(params["children"]) < 2500 and params["children"][-1]["more"]
    out = sent(tree)
    msg(tree, kind="children", id="params/layer_7")
    assert [r["name"] for r in out[-1]["rows"]] == ["kernel", "bias"]
    assert out[-1]["rows"][0]["summary"].startswith("float32[4,4] 64 B mean")
    msg(tree, kind="children", id="params", offset=PAGE)
    assert len(out[-1]["rows"]) == PAGE + 1 and out[-1]["rows"][-1]["more"]


def test_search_by_glob_and_substring():
    insp = demo_inspection()
    w = InspectionWidget(insp)
    tree = w.trees["variables"]
    out = sent(tree)
    msg(tree, kind="search", query="params/**/kernel", seq=3)
    names = [r["name"] for r in out[-1]["rows"]]
    assert out[-1]["seq"] == 3 and out[-1]["total"] == 4
    assert names == ["params/decoder/Dense_0/kernel", "params/decoder/Dense_1/kernel",
                     "params/encoder/Dense_0/kernel", "params/encoder/Dense_1/kernel"]
    msg(tree, kind="search", query="batchnorm_1", seq=4)
    assert {r["name"] for r in out[-1]["rows"]} >= {"batch_stats/encoder/BatchNorm_1/mean"}


def test_clicking_a_leaf_shows_a_bounded_preview():
    class Big(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2048)(x)

    model, x = Big(), jnp.ones((1, 2048))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda m, x: m(x), model)(variables, x)
    w = InspectionWidget(insp)
    fetched = []
    leaf = insp["params/Dense_0/kernel"]
    original = leaf.fetch
    leaf.fetch = lambda index=None: fetched.append(index) or original(index)
    msg(w.trees["variables"], kind="select", id="params/Dense_0/kernel")
    (index,) = fetched
    assert index == (slice(0, 256), slice(0, 256))
    html_out = w.detail.outputs[0]["data"]["text/html"]
    assert "showing [:256, :256] of 4,194,304" in html_out and "float32[2048,2048]" in html_out
    assert "4,096 of 4,194,304 elements, evenly spread" in html_out  # the histogram says it is a sample
    assert "treescope" in w.detail.outputs[1]["data"]["text/html"]


def test_preview_index_bounds():
    assert preview_index((4096, 4096)) == (slice(0, 256), slice(0, 256))
    assert preview_index((3,)) == (slice(0, 3),)
    idx = preview_index((64, 128, 1024))
    assert np.prod([s.stop for s in idx]) <= 65536


def test_mutation_rows_ranked_and_detail_before_after():
    insp = demo_inspection()
    w = InspectionWidget(insp)
    tree = w.trees["mutations"]
    (col,) = tree.initial
    assert col["name"] == "batch_stats" and col["summary"] == "4 changed"
    deltas = [d.max_abs_delta for d in insp.diffs[0].ranked()]
    assert deltas == sorted(deltas, reverse=True)
    assert [r["cls"] for r in col["children"]] == ["changed"] * 4
    msg(tree, kind="select", id=col["children"][0]["id"])
    texts = [o["data"]["text/html"] for o in w.detail.outputs if "fi-detail" in o["data"].get("text/html", "")]
    assert len(texts) == 2 and "(after)" in texts[0] and "(before)" in texts[1]


def test_first_nonfinite_jump():
    model, x = LogNet(), jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    w = InspectionWidget(fi.inspect_apply(lambda m, x: m(x), model)(variables, x))
    assert w.jump.layout.display != "none" and "d3:__call__[0]" in w.jump.description
    out = sent(w.trees["intermediates"])
    w.jump.click()
    assert w.tabs.selected_index == 2
    assert out[-1] == {"kind": "reveal", "id": "#2"}
    assert "d3:__call__[0]" in w.detail.outputs[0]["data"]["text/html"]
    first_row = w.trees["intermediates"].initial[2]
    assert first_row["cls"] == "first" and first_row["bad"]


def test_reveal_beyond_the_loaded_page():
    w = InspectionWidget(wide_inspection(5000))
    tree = w.trees["intermediates"]
    out = sent(tree)
    msg(tree, kind="reveal", id="#1234", loaded=100)
    rows = out[-1]["rows"]
    assert rows[0]["id"] == "#100" and any(r["id"] == "#1234" for r in rows) and rows[-1]["more"]


def test_status_live_phases_and_timings():
    insp = demo_inspection()
    w = InspectionWidget(insp)
    assert "trace" in w.status.value and "compile" in w.status.value and "run" in w.status.value
    model, x = LogNet(), jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    seen = []
    original = InspectionWidget.set_status
    InspectionWidget.set_status = lambda self, text: seen.append(text) or original(self, text)
    try:
        widget = show(fi.inspect_apply(lambda m, x: m(x), model), variables, x)
    finally:
        InspectionWidget.set_status = original
    assert seen[:4] == ["waiting", "tracing...", "compiling...", f"running on {jax.devices()[0]}..."]
    assert "done in" in widget.status.value


def test_failed_run_reports_in_status_and_raises():
    model, x = LogNet(), jnp.ones((2, 3))
    with pytest.raises(Exception):
        show(fi.inspect_apply(lambda m, x: m(x), model), {"params": {}}, x)


def test_detail_escapes_user_text():
    class Evil(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.sow("intermediates", "<img src=x onerror=alert(1)>", x)
            return x

    model, x = Evil(), jnp.ones((1, 2))
    insp = fi.inspect_apply(lambda m, x: m(x), model)({}, x)
    w = InspectionWidget(insp)
    msg(w.trees["intermediates"], kind="select", id="#0")
    page = w.detail.outputs[0]["data"]["text/html"]
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert insp._repr_mimebundle_()["text/html"].count("&lt;img") >= 1
