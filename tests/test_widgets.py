"""Kernel side of the notebook widget: lazy rows, search, detail, status, jump; bounded cost."""

import json
import re
from pathlib import Path

import flax.linen as nn
import ipywidgets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import LogNet, grad_inspection
from synthetic import wide_grad_inspection, wide_inspection

import inspector as fi
from inspector.demo import demo_inspection
from inspector.model import Inspection
from inspector.views import palette, widget_shell
from inspector.views.detail import preview_index
from inspector.views.display import show
from inspector.views.gradient_source import GradSource
from inspector.views.inspection_sources import NodeSource
from inspector.views.row_source import PAGE
from inspector.views.widget_shell import Tree
from inspector.views.widgets import COSTS_WAITING, ComparisonWidget, InspectionWidget


def sent(tree, monkeypatch):
    """Collects what ``tree`` sends to the browser (through its widget's one model)."""
    out = []
    monkeypatch.setattr(tree.owner, "send", lambda content, buffers=None: out.append(content))
    return out


def click(tree, id):
    """What a click on leaf ``id`` in a view does: it sets the widget's synced ``selected``."""
    tree.owner.set_state({"selected": {"tree": tree.name, "id": id}})


def pane(w) -> str:
    """The detail pane's HTML, as the browser receives it."""
    return w.get_state("detail_html")["detail_html"]


def selections(w, monkeypatch):
    """The selections ``w`` sends to the browser, in order (``{"tree", "id"}`` or None)."""
    out = []

    def send_state(key=None):
        state = w.get_state(key)
        if "selected" in state:
            out.append(state["selected"])

    monkeypatch.setattr(w, "send_state", send_state)
    return out


@pytest.fixture
def statuses(monkeypatch):
    """Every status line an :class:`InspectionWidget` shows, in order."""
    seen = []
    original = InspectionWidget.set_status
    monkeypatch.setattr(InspectionWidget, "set_status", lambda self, text: seen.append(text) or original(self, text))
    return seen


def test_first_render_is_bounded_for_5000_leaves():
    before = len(ipywidgets.widgets.widget._instances)
    w = InspectionWidget(wide_inspection(5000))
    models = len(ipywidgets.widgets.widget._instances) - before
    assert models == 1  # one model (no Layout, no tab, button or output model), not one per leaf or tree
    rows = [tr.initial for tr in w.trees.values()]
    assert sum(len(json.dumps(r)) for r in rows) < 150_000

    def count(rs):
        return sum(1 + count(r.get("children", [])) for r in rs)

    assert sum(count(r) for r in rows) <= 320
    assert w.trees["intermediates"].initial[-1]["more"]  # the rest is one "... more" row


def test_children_are_sent_when_opened_and_paginated(monkeypatch):
    w = InspectionWidget(wide_inspection(5000))
    tree = w.trees["variables"]
    params = next(r for r in tree.initial if r["id"] == "params")
    assert len(params["children"]) < 2500 and params["children"][-1]["more"]
    out = sent(tree, monkeypatch)
    tree.answer({"kind": "children", "view": "v1", "id": "params/layer_7", "offset": 0})
    assert {k: out[-1][k] for k in ("kind", "view", "id", "offset")} == {
        "kind": "children", "view": "v1", "id": "params/layer_7", "offset": 0}
    assert [r["name"] for r in out[-1]["rows"]] == ["kernel", "bias"]
    assert out[-1]["rows"][0]["summary"].startswith("float32[4,4] 64 B mean")
    tree.answer({"kind": "children", "view": "v2", "id": "params", "offset": PAGE})
    assert out[-1]["view"] == "v2" and out[-1]["offset"] == PAGE
    rows = out[-1]["rows"]
    assert len(rows) == PAGE + 1 and rows[-1]["more"] and rows[-1]["offset"] == 2 * PAGE
    assert rows[0]["id"] == f"params/layer_{PAGE}"


def test_search_by_glob_and_substring(monkeypatch):
    insp = demo_inspection()
    w = InspectionWidget(insp)
    tree = w.trees["variables"]
    out = sent(tree, monkeypatch)
    tree.answer({"kind": "search", "view": "v1", "query": "params/**/kernel", "seq": 3})
    names = [r["name"] for r in out[-1]["rows"]]
    assert out[-1]["view"] == "v1" and out[-1]["seq"] == 3 and out[-1]["total"] == 4
    assert names == ["params/decoder/Dense_0/kernel", "params/decoder/Dense_1/kernel",
                     "params/encoder/Dense_0/kernel", "params/encoder/Dense_1/kernel"]
    tree.answer({"kind": "search", "view": "v1", "query": "batchnorm_1", "seq": 4})
    assert {r["name"] for r in out[-1]["rows"]} >= {"batch_stats/encoder/BatchNorm_1/mean"}


def test_clicking_a_leaf_shows_a_bounded_preview(monkeypatch):
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
    monkeypatch.setattr(leaf, "fetch", lambda index=None: fetched.append(index) or original(index))
    click(w.trees["variables"], "params/Dense_0/kernel")
    (index,) = fetched
    assert index == (slice(0, 256), slice(0, 256))
    html_out = pane(w)
    assert "showing [:256, :256] of 4,194,304" in html_out and "float32[2048,2048]" in html_out
    assert "4,096 of 4,194,304 elements, evenly spread" in html_out  # the histogram says it is a sample
    assert "treescope" in html_out.split("4,096 of 4,194,304")[1]  # the array, after the statistics


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
    click(tree, col["children"][0]["id"])
    html = pane(w)  # views/detail.py's leaf_detail of the mutation (what it shows is that module's)
    assert f"mutations: {col['children'][0]['id']}" in html and "treescope" in html


def test_rows_and_headings_are_the_view_models():
    insp = demo_inspection()
    w = InspectionWidget(insp)
    text = insp.to_text(timings=False).splitlines()
    headings = {name: tree.heading for name, tree in w.trees.items()}
    assert headings == {"variables": "variables: 16 leaves, 1,816 elements, 7.3 kB", "mutations": "mutated:",
                        "intermediates": "intermediates: 7 calls in execution order", "costs": COSTS_WAITING,
                        "binding": "binding: 12 method calls in order", "output": ""}
    assert all(h in text for name, h in headings.items() if h and name != "costs")  # costs: not computed yet
    call = w.trees["intermediates"].initial[2]  # the class in its own field, as text shows it: "name (kind): summary"
    assert (call["name"], call["kind"]) == ("#2 encoder:code_norm", "sow")  # one sow of that name: no [0]
    assert call["summary"].startswith("float32[4] mean")
    top = w.trees["binding"].initial[0]
    assert (top["name"], top["kind"], top["summary"]) == ("/:encode", "AutoEncoder", "")
    model, x = LogNet(), jnp.ones((2, 3))
    init = InspectionWidget(fi.inspect_init(lambda m, x: m(x), model)(jax.random.key(0), x))
    assert init.trees["output"].heading == "init returns the variables only"  # what text leaves out, said
    assert init.trees["mutations"].heading == "no mutable collections (mutable=False)"


def test_one_leaf_is_selected_at_a_time():
    w = InspectionWidget(demo_inspection())
    click(w.trees["variables"], "params/encoder/Dense_0/kernel")
    click(w.trees["output"], "output")
    assert w.trees["variables"].selected is None and w.trees["output"].selected == "output"
    click(w.trees["variables"], "params/encoder/Dense_0/kernel")  # shown again, though it was the last click there
    assert "variables: params/encoder/Dense_0/kernel" in pane(w)
    assert w.trees["output"].selected is None


def test_first_nonfinite_jump(monkeypatch):
    model, x = LogNet(), jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    w = InspectionWidget(fi.inspect_apply(lambda m, x: m(x), model)(variables, x))
    assert w.jump.layout.display != "none" and w.jump.description == "first non-finite: d3:__call__[0] (Dense) - jump"
    assert w.get_state("jump_label")["jump_label"] == w.jump.description  # the button the front end draws
    tree = w.trees["intermediates"]
    states = selections(w, monkeypatch)
    w.jump.click()
    assert w.selected_tab == "intermediates" and w.tabs.selected_index == list(w.trees).index("intermediates")
    assert tree.selected == "#2" and states[-1] == {"tree": "intermediates", "id": "#2"}  # the views reveal it
    assert "d3:__call__[0]" in pane(w)
    first_row = tree.initial[2]
    assert first_row["cls"] == "first" and first_row["bad"]
    click(w.trees["output"], "output")  # another leaf, in another tab
    assert "output: output" in pane(w)
    w._on_msg({"kind": "jump", "which": "forward"})  # what the front end's button sends
    assert w.selected_tab == "intermediates" and states[-1] == {"tree": "intermediates", "id": "#2"}
    assert "d3:__call__[0]" in pane(w)
    w.jump.click()  # again: the views reveal it again, and the detail is shown again
    assert states[-2:] == [None, {"tree": "intermediates", "id": "#2"}]
    assert "d3:__call__[0]" in pane(w)


def test_reveal_beyond_the_loaded_page(monkeypatch):
    w = InspectionWidget(wide_inspection(5000))
    tree = w.trees["intermediates"]
    out = sent(tree, monkeypatch)
    tree.answer({"kind": "children", "view": "v1", "id": "", "offset": 100, "until": "#1234"})
    rows = out[-1]["rows"]
    assert out[-1]["offset"] == 100 and out[-1]["view"] == "v1"
    assert rows[0]["id"] == "#100" and any(r["id"] == "#1234" for r in rows) and rows[-1]["more"]
    assert rows[-1]["offset"] == 100 + len(rows) - 1
    tree.answer({"kind": "children", "view": "v1", "id": "", "offset": 100, "until": "#1234/nothing"})
    assert out[-1]["rows"] == []  # not a root row: nothing is sent


def test_replies_go_to_the_tree_and_view_that_asked(monkeypatch):
    w = InspectionWidget(demo_inspection())
    out = sent(w.trees["variables"], monkeypatch)
    # what views send: one model serves every tree, each message names its tree
    w._on_msg({"kind": "children", "tree": "variables", "view": "a", "id": "params/encoder", "offset": 0})
    w._on_msg({"kind": "children", "tree": "variables", "view": "b", "id": "params/encoder", "offset": 0})
    w._on_msg({"kind": "search", "tree": "variables", "view": "b", "query": "kernel", "seq": 1})
    w._on_msg({"kind": "search", "tree": "binding", "view": "b", "query": "encode", "seq": 2})
    w._on_msg({"kind": "children", "tree": "nonsense", "view": "b", "id": "", "offset": 0})  # no such tree
    w._on_msg(["not", "a", "request"])
    assert [(m["kind"], m["tree"], m["view"]) for m in out] == [
        ("children", "variables", "a"), ("children", "variables", "b"), ("search", "variables", "b"),
        ("search", "binding", "b")]
    assert out[0]["rows"] == out[1]["rows"] and out[3]["total"] >= 1
    alone = Tree(w, "alone", NodeSource(demo_inspection().variables.root))  # a tree over any RowSource
    alone.answer({"kind": "children", "view": "c", "id": "params", "offset": 0})
    assert out[-1]["tree"] == "alone" and [r["name"] for r in out[-1]["rows"]] == ["decoder", "encoder"]


def test_output_tab(monkeypatch):
    insp = demo_inspection()
    w = InspectionWidget(insp)
    tree = w.trees["output"]
    (row,) = tree.initial  # a returned array: one row, the text's "output: ..." line, and no heading
    assert row["id"] == "output" and row["leaf"] and row["summary"].startswith("float32[4,8] mean")
    assert f"{row['name']}: {row['summary']}" in insp.to_text().splitlines() and tree.heading == ""
    assert w.tabs.titles[list(w.trees).index("output")] == "Output"
    click(tree, "output")
    detail = pane(w)
    assert "output: output" in detail and "<td>128 B</td>" in detail  # how it is stored: in the detail
    model, x = LogNet(), jnp.ones((2, 3))
    init = fi.inspect_init(lambda m, x: m(x), model)(jax.random.key(0), x)
    assert InspectionWidget(init).trees["output"].initial == []  # init returns no output


def test_gradients_tab_only_for_a_gradient_inspection():
    plain = InspectionWidget(demo_inspection())
    assert "gradients" not in plain.trees and "Gradients" not in plain.tabs.titles and plain.grad_jump is None
    insp = grad_inspection()
    w = InspectionWidget(insp)
    assert list(w.trees) == ["variables", "mutations", "intermediates", "costs", "gradients", "binding", "output"]
    assert w.tabs.titles[list(w.trees).index("gradients")] == "Gradients"
    assert w.get_state("tree_names")["tree_names"] == list(w.trees)  # the tabs the front end draws, in order
    assert list(w.get_state("trees_state")["trees_state"]) == list(w.trees)
    w.selected_tab = "gradients"
    assert w.tabs.selected_index == 4
    tree = w.trees["gradients"]
    assert tree.heading == "gradients: loss 0, 4 of 4 calls with gradients, bars: |grad| on a log axis 1e+00..1e+01"
    assert [r["id"] for r in tree.initial] == ["update scales", "activation gradients", "parameter gradients"]
    late = InspectionWidget()  # as fi.show builds it: the tab comes with the inspection, and goes with it
    assert "gradients" not in late.trees
    late.set_inspection(insp)
    assert "Gradients" in late.tabs.titles and late.trees["gradients"].source is not None
    gone = late.trees["gradients"]
    late.set_inspection(demo_inspection())
    assert "gradients" not in late.trees and "gradients" not in late.tree_names and "gradients" not in late.trees_state
    assert gone.source is not None and late.comm is not None  # a tree is no model: nothing to close
    assert late.grad_jump is not None and late.grad_jump.layout.display == "none"
    weak = InspectionWidget(insp, weak=True)  # a displayed inspection's widget: the rows are the inspection's
    assert weak.trees["gradients"].initial == tree.initial


def test_gradient_leaves_show_their_detail():
    insp = grad_inspection()
    w = InspectionWidget(insp)
    tree = w.trees["gradients"]
    call = tree.initial[1]["children"][1]
    assert call["id"] == "g#1" and call["n"] == 2 and not call.get("leaf")  # two gradients below
    kids, _ = tree.source.children("g#1")
    assert [(r["id"], r["name"], r.get("leaf")) for r in kids] == [("g#1/0", "0", True), ("g#1/1", "1", True)]
    click(tree, "g#1/0")
    detail = pane(w)
    assert "gradients: d loss / d root:__call__[0] 0" in detail and "<svg class='fi-hist'" in detail
    assert detail.index("fi-hist") < detail.index("treescope")  # statistics, then array
    click(tree, "g#1/1")
    assert "<th>zeros</th><td>8 (100.0%)</td>" in pane(w)
    click(tree, "params/d2/kernel")
    detail = pane(w)
    assert "gradients: params/d2/kernel" in detail and "<th>shape</th><td>float32[4,2]</td>" in detail
    np.testing.assert_array_equal(tree.source.leaf("params/d2/kernel").value, insp.grad("params/d2/kernel").value)
    click(tree, "g#2")  # a call's row: its only gradient
    assert "d loss / d d2:__call__[0]" in pane(w)
    assert tree.source.leaf("update scales") is None and tree.source.leaf("scale:params/d1/kernel") is None


def test_gradients_tab_is_bounded_and_paged(monkeypatch):
    insp = wide_grad_inspection(5000)
    walked = []
    def counted(name):
        original = getattr(Inspection, name)
        return lambda self, *args, **kwargs: walked.append(name) or original(self, *args, **kwargs)

    for name in ("update_scales", "grad_norms"):
        monkeypatch.setattr(Inspection, name, counted(name))
    w = InspectionWidget(insp)
    tree = w.trees["gradients"]
    assert walked == ["grad_norms"]  # the calls' norms (open at first), not the parameters' scales
    assert len(json.dumps(tree.initial)) < 60_000
    scales, calls, params = tree.initial
    assert (scales["n"], calls["n"], params["n"]) == (5000, 2500, 1) and "children" not in scales
    assert len(calls["children"]) == 101 and calls["children"][-1]["more"] and calls["children"][-1]["offset"] == 100
    out = sent(tree, monkeypatch)
    tree.answer({"kind": "children", "view": "v", "id": "update scales", "offset": 0})
    rows = out[-1]["rows"]
    assert walked == ["grad_norms", "update_scales"] and len(rows) == PAGE + 1 and rows[-1]["offset"] == PAGE
    assert rows[0]["id"].startswith("scale:params/layer_") and rows[0]["summary"].startswith("ratio ")
    tree.answer({"kind": "children", "view": "v", "id": "update scales", "offset": 4900})
    assert len(out[-1]["rows"]) == 100 and not out[-1]["rows"][-1].get("more")
    tree.answer({"kind": "children", "view": "v", "id": "activation gradients", "offset": 100})
    assert out[-1]["rows"][0]["id"] == "g#100" and out[-1]["rows"][-1]["offset"] == 100 + PAGE
    tree.answer({"kind": "children", "view": "v", "id": "params", "offset": 0})
    assert len(out[-1]["rows"]) == PAGE + 1 and out[-1]["rows"][0]["id"] == "params/layer_0"
    assert walked == ["grad_norms", "update_scales"]  # measured once, paged after
    tree.answer({"kind": "search", "view": "v", "query": "layer_1234", "seq": 1})
    assert [r["id"] for r in out[-1]["rows"]] == ["g#1234", "params/layer_1234", "params/layer_1234/kernel",
                                                  "params/layer_1234/bias"] and out[-1]["total"] == 4


def test_first_nonfinite_grad_jump(monkeypatch):
    w = InspectionWidget(grad_inspection())
    assert w.grad_jump is not None and w.grad_jump.layout.display != "none"
    assert w.grad_jump.description == "first non-finite gradient (backward order): d1:__call__[0] (Dense) - jump"
    assert w.jump.layout.display == "none"  # the forward pass is finite
    tree = w.trees["gradients"]
    assert w.get_state("grad_jump_label")["grad_jump_label"] == w.grad_jump.description
    states = selections(w, monkeypatch)
    w.grad_jump.click()
    assert w.selected_tab == "gradients" and tree.selected == "g#0/grad"
    assert states[-1] == {"tree": "gradients", "id": "g#0/grad"}
    assert "d loss / d d1:__call__[0]" in pane(w)
    w.detail_html = ""
    w._on_msg({"kind": "jump", "which": "grad"})  # again, from the front end's button: revealed and shown again
    assert states[-2:] == [None, {"tree": "gradients", "id": "g#0/grad"}] and "d1:__call__[0]" in pane(w)
    assert InspectionWidget(wide_grad_inspection(200)).grad_jump is None  # no NaN, no button


def test_reveal_a_nested_row_beyond_the_loaded_page(monkeypatch):
    w = InspectionWidget(wide_grad_inspection(5000, nan_at=1234))
    assert w.grad_jump.description.startswith("first non-finite gradient (backward order): layer_1234:__call__[0]")
    w.grad_jump.click()
    tree = w.trees["gradients"]
    assert tree.selected == "g#1234/grad"
    out = sent(tree, monkeypatch)
    # what a view does (tree.js reveal and descend): the root's pages, then each row on the way, opened
    tree.answer({"kind": "children", "view": "v", "id": "", "offset": 3, "until": "g#1234/grad"})
    assert out[-1]["rows"] == [] and out[-1]["toward"] == "activation gradients"  # already there: open it
    tree.answer({"kind": "children", "view": "v", "id": "activation gradients", "offset": 100, "until": "g#1234/grad"})
    rows = out[-1]["rows"]
    assert out[-1]["toward"] == "g#1234" and rows[0]["id"] == "g#100" and any(r["id"] == "g#1234" for r in rows)
    tree.answer({"kind": "children", "view": "v", "id": "g#1234", "offset": 0, "until": "g#1234/grad"})
    assert [r["id"] for r in out[-1]["rows"]] == ["g#1234/grad"] and out[-1]["rows"][0]["bad"]
    tree.answer({"kind": "children", "view": "v", "id": "", "offset": 3, "until": "params/layer_2000/kernel"})
    assert out[-1]["toward"] == "parameter gradients"
    tree.answer({"kind": "children", "view": "v", "id": "parameter gradients", "offset": 0,
                 "until": "params/layer_2000/kernel"})
    assert out[-1]["toward"] == "params" and [r["id"] for r in out[-1]["rows"]] == ["params"]
    tree.answer({"kind": "children", "view": "v", "id": "params", "offset": 0, "until": "params/layer_2000/kernel"})
    assert out[-1]["toward"] == "params/layer_2000" and any(r["id"] == "params/layer_2000" for r in out[-1]["rows"])
    tree.answer({"kind": "children", "view": "v", "id": "", "offset": 0, "until": "scale:params/layer_7/bias"})
    assert out[-1]["toward"] == "update scales"
    flat = InspectionWidget(wide_inspection(400)).trees["intermediates"]
    out = sent(flat, monkeypatch)
    flat.answer({"kind": "children", "view": "v", "id": "", "offset": 0, "until": "#150"})
    assert out[-1]["toward"] == "#150"  # a row of the root: nothing to open on the way


def test_grad_source_needs_gradients():
    with pytest.raises(ValueError, match="inspect_grad"):
        GradSource(demo_inspection())


def test_status_live_phases_and_timings(statuses):
    insp = demo_inspection()
    w = InspectionWidget(insp)
    assert "trace" in w.status.value and "compile" in w.status.value and "run" in w.status.value
    assert w.get_state("status_text")["status_text"] == w.status.value  # the front end shows it as text
    model, x = LogNet(), jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    statuses.clear()
    widget = show(fi.inspect_apply(lambda m, x: m(x), model), variables, x)
    assert statuses[:4] == ["waiting", "tracing...", "compiling...", f"running on {jax.devices()[0]}..."]
    assert "done in" in widget.status.value


def test_failed_run_reports_in_status_and_raises(statuses):
    model, x = LogNet(), jnp.ones((2, 3))
    with pytest.raises(Exception) as raised:
        show(fi.inspect_apply(lambda m, x: m(x), model), {"params": {}}, x)
    assert statuses[-1].startswith(f"failed: {type(raised.value).__name__}: ")
    assert str(raised.value).splitlines()[0] in statuses[-1]


def test_detail_escapes_user_text():
    class Evil(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.sow("intermediates", "<img src=x onerror=alert(1)>", x)
            return x

    model, x = Evil(), jnp.ones((1, 2))
    insp = fi.inspect_apply(lambda m, x: m(x), model)({}, x)
    w = InspectionWidget(insp)
    click(w.trees["intermediates"], "#0")
    page = pane(w)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert insp._repr_mimebundle_()["text/html"].count("&lt;img") >= 1


def test_colours_are_the_palettes_alone():
    views = Path(widget_shell.__file__).parent
    # Our own code only: third-party files under static/vendor/ keep their own colours.
    files = [f for f in [*views.glob("*.py"), *(views / "static").glob("*.*")] if f.name != "palette.py"]
    literal = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?\b|\b(?:rgb|hsl)a?\(")
    assert [f.name for f in files if literal.search(f.read_text())] == []
    used = {name for f in files for name in re.findall(r"var\((--fi-[a-z]+)\)", f.read_text())}
    defined = re.findall(r"(--fi-[a-z]+):", widget_shell.CSS.split("@media")[0])
    assert used and used <= set(defined) and len(defined) == len(palette.PALETTE) + 1  # + the code font
    dark = widget_shell.CSS.split("@media")[1]
    assert all(f"--fi-{name}:" in dark and value in dark for name, value in palette.DARK.items())


def test_comparison_widget_is_one_model_with_its_tree_and_detail(monkeypatch):
    insp = demo_inspection()
    before = len(ipywidgets.widgets.widget._instances)
    w = ComparisonWidget(fi.compare(insp, insp, labels=("a", "<b>b</b>")))
    assert len(ipywidgets.widgets.widget._instances) - before == 1
    assert w.tree_names == ["comparison"] and w.kind == "comparison" and w.trees == {"comparison": w.tree}
    assert "<b>" in w.status.value  # plain text: the front end shows it with textContent
    out = sent(w.tree, monkeypatch)
    w._on_msg({"kind": "children", "tree": "comparison", "view": "v", "id": w.tree.initial[0]["id"], "offset": 0})
    assert out[-1]["tree"] == "comparison" and out[-1]["view"] == "v"
    click(w.tree, "output:output")
    assert "output" in pane(w) and "&lt;b&gt;b&lt;/b&gt;" in pane(w) and "<b>b" not in pane(w)
    w.close()
    assert w.comm is None


def test_rows_carry_their_bar_to_the_front_end():
    w = InspectionWidget(grad_inspection())
    calls = next(r for r in w.trees_state["gradients"]["initial"] if r["id"] == "activation gradients")
    bars = {r["id"]: (r.get("bar"), r.get("bar_title")) for r in calls["children"]}
    assert all(0 <= b <= 1 and title for b, title in bars.values() if b is not None) and any(
        b is not None for b, _ in bars.values())
    esm = widget_shell.ESM  # drawn by tree.js as a bar in its own column (the key fact in a span of its own)
    assert "fi-bar-fill" in esm and "bar_title" in esm and "fi-fact" in esm
