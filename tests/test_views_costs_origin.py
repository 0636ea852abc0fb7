"""The Costs section, the first NaN's operation and the last failure in every view (text, rich, static HTML,
widget). Oracles: hand counts of the FLOPs of Dense layers, ``insp.costs()`` itself, the golden text, the
origin's and the failure's own text, flax's error."""

import gc
import re
import weakref
from html.parser import HTMLParser

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from rich.console import Console

import inspector as fi
from inspector import costs as C
from inspector import failure
from inspector import origin as O
from inspector.demo import demo_inspection
from inspector.views import html
from inspector.views.cost_section import RULE_ID, cost_summary
from inspector.views.cost_source import CostSource
from inspector.views.document import origin_line, origin_words
from inspector.views.failures import render_html as failure_html
from inspector.views.widgets import COSTS_COMPUTING, COSTS_WAITING, InspectionWidget
from models import grad_inspection
from test_views import check_golden
from test_views import nan_inspection as lognet

BAD = '<script>alert("x")</script>\'q'



def text_of(insp, **kwargs) -> str:
    return insp.to_text(timings=False, **kwargs).replace(insp.device, "<device>")


def rich_text(obj) -> str:
    console = Console(record=True, width=1000, force_terminal=False)
    console.print(obj)
    return console.export_text()


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def html_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "".join(parser.parts)


# hand counts (XLA's rules): a Dense of n_in -> n_out on a batch of 2 is 2*2*n_in*n_out multiply-adds' FLOPs plus
# 2*n_out for its bias; LogNet's own code adds abs (8), +1 (8) and log (8 transcendentals, no FLOP)
HAND = {"d1": 2 * 2 * 3 * 4 + 2 * 4, "d2": 2 * 2 * 4 * 4 + 2 * 4, "d3": 2 * 2 * 4 * 2 + 2 * 2}
HAND_TOTAL = sum(HAND.values()) + 8 + 8
HAND_PARAMS = {"d1": 3 * 4 + 4, "d2": 4 * 4 + 4, "d3": 4 * 2 + 2}


def test_costs_section_only_when_computed_or_asked_and_golden():
    insp = lognet()
    assert C.computed(insp) is None and C.available(insp)
    assert "costs:" not in text_of(insp)  # the default is cheap: nothing computed by a view
    assert C.computed(insp) is None
    insp.costs(memory=False)  # no compile: the golden does not depend on XLA's memory analysis
    text = text_of(insp)
    check_golden("lognet_costs.txt", text)
    assert text == text_of(insp, costs=True)  # asked: the computed ones are reused
    assert "costs:" not in text_of(insp, costs=False)
    by_flops = text_of(insp, costs_order="flops")
    check_golden("lognet_costs_by_flops.txt", "\n".join(line for line in by_flops.splitlines()
                                                         if line.startswith(("costs:", "  [", "    ["))) + "\n")


def test_costs_to_text_asked_computes_once_and_says_why_when_it_cannot(monkeypatch):
    insp = lognet()
    calls = []
    real = C.inspection_costs
    monkeypatch.setattr(C, "inspection_costs", lambda i, memory=True: calls.append(1) or real(i, memory))
    assert "costs: " in text_of(insp, costs=True) and calls == [1]
    assert "costs: " in text_of(insp) and calls == [1]
    plain = demo_inspection()
    plain.__dict__.pop("_inspector_costs", None)  # as an unpickled inspection: nothing to re-trace
    assert not C.available(plain)
    assert "costs unavailable: CostsUnavailable: costs are computed for inspections made by" in "\n".join(
        html_text(html.export(plain, costs=True)).splitlines())


def _cost_numbers(summary: str) -> tuple[float, float, int, int, int, int]:
    m = re.fullmatch(r"(\d+) FLOPs \((\d+\.\d)%\), (\d+) B accessed, (\d+) B activations, (\d+) params \((\d+) B\)",
                     summary)
    assert m, summary
    return float(m[1]), float(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6])


def test_numbers_of_every_costs_view_are_the_costs_and_the_hand_counts():
    insp = lognet()
    costs = insp.costs(memory=False)
    by_path = {m.path: m for m in costs.modules}
    assert {k: by_path[(k,)].flops for k in HAND} == HAND and costs.flops == HAND_TOTAL  # the oracle
    assert {k: by_path[(k,)].params for k in HAND} == HAND_PARAMS
    source = CostSource(costs)
    rows = source.initial()
    assert rows[0]["id"] == RULE_ID and C.RULE in rows[0]["summary"]
    root = rows[1]
    assert (root["name"], root["kind"]) == ("/", "LogNet")
    seen = {}
    for row in [root] + root["children"]:
        flops, share, acc, act, params, pbytes = _cost_numbers(row["summary"])
        m = source.by_id[row["id"]]
        assert (flops, acc, act, params, pbytes) == (m.flops, m.bytes_accessed, m.output_bytes, m.params,
                                                    m.param_bytes)
        assert share == round(100 * m.flops / costs.flops, 1) and row["bar"] == pytest.approx(m.flops / costs.flops)
        seen[row["name"]] = flops
    assert seen == {"/": HAND_TOTAL, **HAND}
    text = text_of(insp)
    for m in costs.modules:  # the text (and so rich and HTML, checked below) says the same numbers
        assert sum(cost_summary(m, costs.flops) in line for line in text.splitlines()) == 1
    assert [r["name"] for r in CostSource(costs, "flops").initial()[1]["children"]] == ["d2", "d1", "d3"]
    in_rich, in_html = rich_text(insp), html_text(html.export(insp))
    for line in text.splitlines():
        if line.startswith(("costs:", "  [", "    [")):
            assert line.strip() in in_rich and line.strip()[15:] in in_html, line  # HTML draws the bar as a box


def test_origin_line_absent_available_computed_golden_in_every_view():
    plain, insp = demo_inspection(), lognet()
    absent, available = origin_line(plain), origin_line(insp)
    assert O.computed(insp) is None  # a view never computes it
    origin = insp.nonfinite_origin()
    computed = origin_line(insp)
    check_golden("origin_lines.txt", f"absent: {absent}\navailable: {available}\ncomputed: {computed}\n")
    assert computed.startswith("first NaN born at `log` in models.py:") and origin.where in computed
    assert text_of(insp).splitlines()[1] == computed
    assert computed in rich_text(insp) and computed in html_text(html.export(insp))
    assert all(not line.startswith("first N") for line in text_of(plain).splitlines())


def hostile():
    class Inner(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.log(nn.Dense(3, name=BAD)(x) - 100.0)

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Inner(name=BAD + "i")(x)

    x = jnp.ones((2, 3))
    return Outer(), Outer().init(jax.random.key(0), x), x


def test_hostile_module_names_are_escaped_in_costs_origin_and_failure_html():
    model, v, x = hostile()
    insp = fi.inspect(model, v, x)
    for computed in (False, True):
        if computed:
            insp.nonfinite_origin()
        page = html.export(insp, costs=True)
        assert "<script" not in page and BAD not in page  # the page has no script at all: every name escaped
        panel = page.split('data-panel="costs"', 1)[1].split('data-panel=', 1)[0]
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;\\/script&gt;&#x27;q" in panel
        assert html_text(panel).count("(Dense): 42 FLOPs") == 1
        origin = page.split('class="fi-origin">', 1)[1].split("</div>", 1)[0]
        assert ("&lt;script&gt;" in origin) == computed
    failure.forget()
    with pytest.raises(Exception) as info:
        fi.apply(lambda m, x: m(x), model)(v, jnp.ones((2, 5)))
    assert type(info.value).__name__ == "ScopeParamShapeError"
    page = failure_html(fi.last_failure())
    assert "<script" not in page and BAD not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(16)(x))


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.Dense(8)(Block()(x)))


def test_failure_rich_and_html_say_what_its_text_says():
    fn, x = (lambda m, x: m(x)), jnp.ones((4, 8))
    v = Net().init(jax.random.key(0), x)
    v = {"params": {**v["params"], "Dense_0": {**v["params"]["Dense_0"],
                                                "kernel": jnp.ones((3, 8))}}}  # a shape flax's init does not make
    failure.forget()
    with pytest.raises(Exception) as ours:
        fi.apply(fn, Net())(v, x)
    with pytest.raises(Exception) as theirs:
        Net().apply(v, x)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)  # flax's own error
    f = fi.last_failure()
    text = f.to_text()
    in_rich, page = rich_text(f), f._repr_html_()
    in_html = html_text(page)
    differ = [r for r in f.variables if r.status != "same"]
    assert [r.path for r in differ] == ["params/Dense_0/kernel"] and differ[0].given == "float32[3,8]"
    assert f"1 of {len(f.variables)} differ" in text
    for view in (in_rich, in_html):
        assert text.splitlines()[0] in view and text.splitlines()[1].strip() in view  # the error and its message
        assert f"Variables, expected (as init creates them) vs given: 1 of {len(f.variables)} differ" in view
        for c in f.completed:
            assert c.key in view and ", ".join(c.inputs) in view and ", ".join(c.outputs) in view
        for c in f.failing:
            assert c.line(False) in view
        for r in f.variables:
            assert r.path in view and (r.expected or "-") in view and (r.given or "-") in view
    bad = re.findall(r'<tr class="fi-bad" data-status="(\w+)"><td>([^<]*)</td>', page)
    assert bad == [("differs", "params/Dense_0/kernel")]  # side by side, the mismatch marked
    assert page.count('data-status="same"') == len(f.variables) - 1
    assert len(re.findall(r"<tr><td>\d+</td>", page)) == len(f.completed) == 3
    assert re.search(r"params/Dense_0/kernel +│ float32\[8,2\] +│ float32\[3,8\] +│ differs", in_rich)


def test_widget_computes_costs_when_the_tab_opens_never_at_first_render(monkeypatch):
    insp = lognet()
    calls = []
    real = C.inspection_costs
    monkeypatch.setattr(C, "inspection_costs", lambda i, memory=True: calls.append(1) or real(i, memory))
    w = InspectionWidget(insp)
    insp._repr_mimebundle_()  # displaying it (widget and static fallback) computes nothing
    assert calls == [] and w.costs_state == "waiting" and w.trees["costs"].heading == COSTS_WAITING
    assert w.trees["costs"].initial == []
    states = []
    w.observe(lambda change: states.append(change["new"]), "costs_state")
    headings = []
    real_set = w.trees["costs"].set_message
    monkeypatch.setattr(w.trees["costs"], "set_message", lambda h: headings.append(h) or real_set(h))
    w.selected_tab = "costs"  # as a click on the tab does (the front end sets `tab`)
    assert calls == [1] and states == ["computing", "done"] and headings == [COSTS_COMPUTING]
    tree = w.trees["costs"]
    assert tree.heading.startswith("costs: 180 FLOPs") and [r["id"] for r in tree.initial] == [RULE_ID, "/"]
    w.selected_tab = "variables"
    w.selected_tab = "costs"
    assert calls == [1]
    w.costs_order = "flops"  # the front end's "sort by FLOPs" button
    assert [r["name"] for r in tree.initial[1]["children"]] == ["d2", "d1", "d3"] and calls == [1]
    again = InspectionWidget(insp, weak=True)  # computed: shown at once
    assert again.costs_state == "done" and again.trees["costs"].initial[1]["name"] == "/" and calls == [1]


def test_widget_says_why_costs_failed_and_has_no_costs_tab_where_none_can_be_had(monkeypatch):
    def boom(insp, memory=True):
        raise RuntimeError("no <backend>")

    monkeypatch.setattr(C, "inspection_costs", boom)
    w = InspectionWidget(lognet())
    w.selected_tab = "costs"
    assert w.costs_state == "error" and w.trees["costs"].heading == "costs unavailable: RuntimeError: no <backend>"
    plain = demo_inspection()
    plain.__dict__.pop("_inspector_costs", None)
    assert "costs" not in InspectionWidget(plain).trees


def test_widget_origin_button_finds_the_operation_once(monkeypatch):
    insp = lognet()
    runs = []
    real = O.Rerun._compute
    monkeypatch.setattr(O.Rerun, "_compute", lambda self: runs.append(1) or real(self))
    w = InspectionWidget(insp, weak=True)
    assert w.origin_state == "offer" and runs == [] and w.origin_text == ""
    states = []
    w.observe(lambda change: states.append(change["new"]), "origin_state")
    w._on_msg({"kind": "origin"})  # the "Find the operation" button
    w._on_msg({"kind": "origin"})  # a second click (two views): nothing more runs
    assert runs == [1] and states == ["running", "done"]
    origin = O.computed(insp)
    assert w.origin_line == origin_words(origin) and "`log`" in w.origin_line and origin.where in w.origin_line
    assert w.origin_text.splitlines() == origin.to_text().splitlines() and "operand 0: float32[2,4]" in w.origin_text
    assert InspectionWidget(insp).origin_state == "done" and runs == [1]
    assert InspectionWidget(demo_inspection()).origin_state == ""


def test_widget_state_is_not_kept_on_the_inspection_and_frees_it():
    for make in (lognet, grad_inspection):
        insp = make()
        insp.calls, insp.outputs  # noqa: B018 - built when first read: the inspection's own, not the widget's
        keys = set(insp.__dict__)
        w = InspectionWidget(insp, weak=True)
        w.selected_tab = "costs"
        assert set(insp.__dict__) - keys <= {"_inspector_costs_value"}  # insp.costs()'s own cache only
        ref, wref = weakref.ref(insp), weakref.ref(w)
        del insp, w
        gc.collect()  # frees the inspection; its finalizer closes the widget, which the next pass frees
        gc.collect()
        assert ref() is None and wref() is None
