"""Control, bidi and separator characters in user names (class, module, variable, collection, sow
names) reach no view raw: the widget's synced state and the HTML views show them as visible escapes
(``\\u202e``), as the text views do, and markup in names stays text."""

import functools
import re
from typing import Any

import flax.linen as nn
import ipywidgets
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector.history import History, Scalars, Site
from inspector.views import html
from inspector.views.history_widget import WatchWidget
from inspector.views.row_source import RowSource
from inspector.views.widget_shell import Tree
from inspector.views.widgets import ComparisonWidget, InspectionWidget

HOSTILE = "\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\x1b\x07\x01\x7f\x85\x9b\u2028\u2029"
RAW = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
"""What must not reach a view: bidi overrides and isolates, marks, C0 and C1 controls, separators
(an HTML page's own line breaks and tabs aside)."""
RAW_TEXT = re.compile(RAW.pattern[:-1] + "\t\n\r]")
"""The same, line breaks and tabs included: widget text is the name as shown."""

CLASS = "Evil\u202eName\x1b[31m"
MODULE = "d\u202e\x1b[31m\u2066<script>alert(1)</script>"
PARAM = "w\u2066\x07\n"
SOW = "s\u2028\x85\u200f<script>"
COLLECTION = "stats\u202e\u061c"
COUNTER = "c\x9b\u2029\x01"


def _call(self, x):
    w = self.param(PARAM, lambda key, shape: jnp.ones(shape), (x.shape[-1], 2))
    y = Inner(2, name=MODULE)(x)
    self.sow("intermediates", SOW, y)
    count = self.variable(COLLECTION, COUNTER, lambda: jnp.zeros(2))
    count.value = count.value + 1
    return x @ w + y


Inner = type("Inner\u2067\x07", (nn.Dense,), {"__module__": __name__})
Evil = type(CLASS, (nn.Module,), {"__call__": nn.compact(_call), "__module__": __name__})


@functools.cache
def hostile_inspections() -> tuple[Any, Any]:
    model, x = Evil(), jnp.ones((1, 3))
    variables = model.init(jax.random.key(0), x)
    run = fi.inspect_apply(lambda m, x: m(x), model, mutable=True)
    return run(variables, x), run(variables, x + 1)


def raw_in(text: str, pattern: re.Pattern = RAW_TEXT) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in pattern.findall(text)})


def every_row(source: RowSource) -> list[dict]:
    """Every row of ``source``, opened all the way down, and its search hits."""
    rows, todo = [], [""]
    while todo:
        for row in source.page(todo.pop()):
            rows.append(row)
            if row["n"]:
                todo.append(row["id"])
    return rows + source.search("**")[0]


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings(v)]
    return []


def without_addresses(value: Any) -> Any:
    """``value`` without the rows' ``id``/``parent`` fields (addresses the views send back, never shown)."""
    if isinstance(value, dict):
        return {k: without_addresses(v) for k, v in value.items() if k not in ("id", "parent")}
    if isinstance(value, list):
        return [without_addresses(v) for v in value]
    return value


def shown_text(models: list[ipywidgets.Widget]) -> list[str]:
    """Every string that ``models`` sync to the browser and that every row of each of their trees shows
    (the widget's own script and style, and the detail pane's HTML, checked by :func:`headers`, aside;
    a row's ``id`` is an address, not text)."""
    out = []
    for m in models:
        state = {k: v for k, v in m.get_state().items() if k not in ("_esm", "_css", "detail_html", "selected")}
        out += strings(without_addresses(state))
        for tree in getattr(m, "trees", {}).values():
            if isinstance(tree, Tree) and tree.source is not None:
                out += [s for row in every_row(tree.source) for k, v in row.items() if k not in ("id", "parent")
                        for s in strings(v)]
                # a label titles a leaf's detail: the leaves' labels are what a view shows
                out += [tree.source.label(row["id"]) for row in every_row(tree.source) if row.get("leaf")]
    return out


def models_of(widget: ipywidgets.Widget) -> list[ipywidgets.Widget]:
    """``widget`` and every model below it (children, layouts, styles)."""
    out, todo = [], [widget]
    while todo:
        w = todo.pop()
        out.append(w)
        todo += [c for c in (*getattr(w, "children", ()), getattr(w, "layout", None), getattr(w, "style", None))
                 if isinstance(c, ipywidgets.Widget)]
    return out


def test_the_hostile_names_reach_the_views():
    insp, _ = hostile_inspections()
    text = insp.to_text()
    for name in (CLASS, MODULE, PARAM, SOW, COLLECTION, COUNTER):
        assert fi.names.safe(name) in text or fi.names.quote(name) in text, name


def headers(widget: Any, tree: Tree) -> list[str]:
    """The detail headers (HTML) the widget shows for each leaf of ``tree``, clicked in turn
    (treescope's figures, with their script, aside)."""
    out = []
    for row in every_row(tree.source):
        if row.get("leaf"):
            tree.select(row["id"])
            for html in [widget.detail_html]:
                out += [html] if html.startswith("<i>") else re.findall(
                    r"<div class='fi-detail'>.*?<div class='fi-note'>[^<]*</div></div>", html, re.S)
    return out


def test_widget_state_has_no_raw_control_or_bidi_character():
    insp, _ = hostile_inspections()
    w = InspectionWidget(insp)
    assert w.trees["costs"].source is None  # made when the Costs tab is opened
    w.compute_costs()
    details = [h for tree in w.trees.values() for h in headers(w, tree)]
    text = shown_text(models_of(w))
    assert [raw_in(s) for s in text if raw_in(s)] == []
    joined = "\n".join(text)
    assert "\\u202e" in joined and "\\x1b" in joined and "\\u2028" in joined and "\\x9b" in joined
    assert len(details) > 5 and [raw_in(d, RAW) for d in details if raw_in(d, RAW)] == []
    assert "\\u2066" in "".join(details) and not any("<script" in d for d in details)
    w.close()


def test_comparison_widget_state_has_no_raw_control_or_bidi_character():
    a, b = hostile_inspections()
    w = ComparisonWidget(fi.compare(a, b))
    details = headers(w, w.tree)
    text = shown_text(models_of(w))
    assert [raw_in(s) for s in text if raw_in(s)] == []
    assert "\\u202e" in "\n".join(text)
    assert details and [raw_in(d, RAW) for d in details if raw_in(d, RAW)] == []
    w.close()


@pytest.mark.parametrize("page", [
    lambda a, b: a.to_html(),
    lambda a, b: a._repr_mimebundle_()["text/html"],
    lambda a, b: html.render_comparison(fi.compare(a, b)),
    lambda a, b: fi.compare(a, b)._repr_mimebundle_()["text/html"],
], ids=["export", "notebook-fallback", "comparison", "comparison-fallback"])
def test_static_html_has_no_raw_control_or_bidi_character(page):
    text = page(*hostile_inspections())
    assert raw_in(text, RAW) == []
    assert "\\u202e" in text and "\\x1b" in text
    assert "<script" not in text and "&lt;script&gt;" in text  # still escaped


def test_history_views_have_no_raw_control_or_bidi_character():
    h = History()
    for step in range(3):
        h.add(step, Site("activation", MODULE + SOW), Scalars(1.0, 2.0, 3.0, 0.25, step, 0, 4.0, None, 8))
    page = h.to_html()
    assert raw_in(page, RAW) == [] and "\\u202e" in page
    assert page.count("<script") == 2 and page.count("</script") == 2  # the data and the page's own module
    w = WatchWidget(h, interval=60)
    try:
        text = shown_text(models_of(w))
        assert [raw_in(s, RAW) for s in text if raw_in(s, RAW)] == []
        labels = w.data["sites"]
        assert labels and [raw_in(s) for s in labels if raw_in(s)] == [] and "\\u202e" in labels[0]
    finally:
        w.close()
