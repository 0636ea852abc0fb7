"""Text (golden), rich and static HTML views of an Inspection."""

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from rich.console import Console

import inspector as fi
from inspector.demo import demo_inspection
from inspector.views import html
from inspector.views.document import ORIGIN_HINT, document, sections
from inspector.views.terminal import render_rich
from inspector.views.viewmodel import FIRST_MARK, Row, bar_text
from inspector.views.widgets import ComparisonWidget, InspectionWidget
from models import LogNet, ScanNet, grad_inspection

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; rerun with UPDATE_GOLDEN=1 if intended"


def nan_inspection():
    model, x = LogNet(), jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    return fi.inspect_apply(lambda m, x: m(x), model)(variables, x)


def test_demo_text_golden():
    insp = demo_inspection()
    check_golden("demo.txt", insp.to_text(timings=False).replace(insp.device, "<device>"))


def test_nan_text_golden():
    insp = nan_inspection()
    check_golden("lognet.txt", insp.to_text(timings=False).replace(insp.device, "<device>"))


def test_comparison_text_golden():
    """Train vs eval of the demo: in execution order, the first divergence named and marked, equal
    leaves one count line per section."""
    cmp = fi.compare(demo_inspection(), demo_inspection(train=False), labels=("train", "eval"))
    check_golden("compare.txt", cmp.to_text())
    check_golden("compare_by_size.txt", cmp.to_text(order="size"))


def test_gradients_text_golden():
    """A NaN gradient born in the backward pass: bars on one log axis, the key facts first."""
    insp = grad_inspection()
    check_golden("grad.txt", insp.to_text(timings=False).replace(insp.device, "<device>"))


def test_rich_tree_has_the_text_content_and_highlights_nonfinite():
    insp = nan_inspection()
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(render_rich(insp))
    plain = console.export_text(clear=False)
    assert "first non-finite: d3:__call__[0]" in plain
    for line in insp.to_text(timings=False).splitlines():
        m = re.match(r"\s*#\d+ (\S+)", line)
        if m:
            assert m.group(1) in plain
    ansi = console.export_text(styles=True)
    assert "\x1b[1;31mfirst non-finite: d3:__call__[0]" in ansi  # bold red
    assert "\x1b[1;31m!! 4 nan\x1b[0m" in ansi  # the key fact first, bold red
    assert "\x1b[31mfloat32[2,2] no finite element" in ansi  # non-finite leaves in red


def test_static_html_escapes_user_text_and_marks_first_nonfinite():
    class Evil(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.sow("intermediates", "<img src=x onerror=alert(1)>", x)
            return nn.Dense(2, name="<b>d</b>")(x)

    model, x = Evil(), jnp.ones((1, 2))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    page = fi.inspect_apply(lambda m, x: m(x), model)(variables, x).to_html()
    assert "<img" not in page and "<b>d" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b&gt;d&lt;/b&gt;" in page
    nan_page = nan_inspection().to_html()
    assert 'href="#fi-call-2"' in nan_page and 'id="fi-call-2" class="fi-first" open' in nan_page
    assert "http://" not in nan_page and "https://" not in nan_page  # offline, no CDN


def test_demo_main_writes_html(tmp_path, capsys):
    from inspector.demo import main

    out = tmp_path / "demo.html"
    main(["--html", str(out)])
    printed = capsys.readouterr().out
    assert "first non-finite" not in printed and "#0 encoder/Dense_0 (Dense)" in printed
    assert out.read_text().startswith("<!DOCTYPE html>")


def noted_inspection():
    model, x = ScanNet(), jnp.ones((2, 4))  # flax drops what the scanned body returns: notes say so
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    return fi.inspect_apply(lambda m, x: m(x), model)(variables, x)


BLOCKS = frozenset({"div", "details", "summary", "label", "title", "body"})


class _Blocks(HTMLParser):
    """The text of a page, a line per block element, sparklines (pictures) and styles left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines, self.skip = [""], []

    def handle_starttag(self, tag, attrs):
        if tag in BLOCKS:
            self.lines.append("")
        if self.skip or tag == "style" or "fi-spark" in (dict(attrs).get("class") or ""):
            self.skip.append(tag)

    def handle_endtag(self, tag):
        if self.skip and self.skip[-1] == tag:
            self.skip.pop()
        elif tag in BLOCKS:
            self.lines.append("")

    def handle_data(self, data):
        if not self.skip:
            self.lines[-1] += data


def html_lines(page: str) -> set[str]:
    parser = _Blocks()
    parser.feed(page)
    return {line.strip() for line in parser.lines if line.strip()}


def rich_lines(obj) -> set[str]:
    console = Console(record=True, width=1000, force_terminal=False)
    console.print(obj)
    return {re.sub(r"^[\s│├└─]+", "", line).rstrip() for line in console.export_text().splitlines()}


def _blank_module_type():
    insp = nan_inspection()
    insp.calls[0].module_type = ""  # flax recorded no event for it: shown as '?' in every view
    return insp


every_kind_of_view = pytest.mark.parametrize(
    "make", [demo_inspection, nan_inspection, noted_inspection, _blank_module_type, grad_inspection,
             lambda: fi.compare(demo_inspection(), demo_inspection(train=False))],
    ids=["demo", "lognet", "notes", "blank-type", "grad", "comparison"])
"""The inspections and the comparison that the parity tests render in every view."""


@every_kind_of_view
def test_every_line_of_the_text_view_is_a_line_of_rich_and_of_the_static_html(make):
    obj = make()
    text = [line.strip() for line in str(obj).splitlines()]
    page = html.export(obj) if isinstance(obj, fi.Inspection) else html.render_comparison(obj)
    in_rich, in_html = rich_lines(obj), html_lines(page)
    assert [line for line in text if line not in in_rich] == []
    assert [line for line in text if line not in in_html] == []
    if isinstance(obj, fi.Inspection):  # what the parity has to cover, so that it can fail
        assert any(line.startswith("output: ") for line in text) and any(line.startswith("binding: ") for line in text)
        if make is noted_inspection:
            assert obj.notes and all(f"note: {n}" in text for n in obj.notes)
        if make is _blank_module_type:
            assert any(line.startswith("#0 d1 (?): ") for line in text)


def _widget_row_lines(tree) -> set[str]:
    """Every row of ``tree`` with every node opened, as the browser asks for them (a message
    per opened node, a page at a time), each as ``name (kind): summary``: the widget shows
    these in spans of their own, joined here as the text view joins them. The first
    non-finite call is marked by its class (an outline) where the text view writes a mark."""
    sent = []
    tree.send = lambda content, buffers=None: sent.append(content)
    lines, opened = set(), []

    def take(rows):
        for row in rows:
            if row.get("more"):  # "... N more": the next page, as a click on it asks
                tree.answer({"kind": "children", "view": "t", "id": row["parent"], "offset": row["offset"]})
                take(sent[-1]["rows"])
                continue
            line = row["name"] + (f" ({row['kind']})" if row.get("kind") else "")
            said = "; ".join(p for p in (row.get("fact", ""), row["summary"]) if p)
            line += f": {said}" if said else ""
            if "bar_title" in row:  # the bar's column, as text draws it
                line = bar_text(Row("", bar=row.get("bar"), bar_title=row["bar_title"])) + " " + line
            mark = row.get("mark") or (FIRST_MARK if row.get("cls") == "first" else "")
            line += f" {mark}" if mark else ""
            lines.add(line)
            if "children" in row:
                take(row["children"])
            elif row["n"]:
                opened.append(row["id"])
                tree.answer({"kind": "children", "view": "t", "id": row["id"], "offset": 0})
                take(sent[-1]["rows"])

    take(tree.initial)
    assert len(opened) == len(set(opened))  # each node opened once: no row came twice
    return lines


def widget_lines(obj) -> dict[str, set[str]]:
    """What the widget of ``obj`` shows, by section key ('' for the header and the notes),
    every node opened: each tree's heading and rows."""
    if isinstance(obj, fi.Comparison):
        w = ComparisonWidget(obj)
        return {"": {w.status.value}, "*": _widget_row_lines(w.tree)}
    w = InspectionWidget(obj)
    # the status line follows the header with the timings in its own words
    shown = {"": {w.status.value.split(" · ")[0]} | set(w.notes)}
    for key, tree in w.trees.items():
        shown[key] = {tree.heading} - {""} | _widget_row_lines(tree)
    # the text's hint to ask for the first NaN's operation is the "Find the operation" button
    if w.origin_state == "offer":
        shown[""].add(f"first NaN/Inf: {ORIGIN_HINT}")
    elif w.origin_line:
        shown[""].add(w.origin_line)
    # the sections' "first non-finite" rows are the jump buttons above the tabs
    for key, jump in (("intermediates", w.jump), ("gradients", w.grad_jump)):
        if jump is not None and jump.layout.display != "none":
            shown[key].add(re.sub(r" \([^()]*\) - jump$", "", jump.description))
    return shown


def text_blocks(obj) -> dict[str, list[str]]:
    """The text view's lines by the key of the section they belong to ('' for the header and notes)."""
    titles = {s.title: s.key for s in document(obj).sections}
    text = obj.to_text(timings=False) if isinstance(obj, fi.Inspection) else str(obj)
    blocks: dict[str, list[str]] = {}
    key = ""
    for line in text.splitlines():
        if not line.startswith(" "):
            key = titles.get(line.split(":", 1)[0], "")
        blocks.setdefault(key, []).append(line.strip())
    return blocks


@every_kind_of_view
def test_every_line_of_the_text_view_is_a_line_of_the_widget_in_its_section(make):
    obj = make()
    blocks, shown = text_blocks(obj), widget_lines(obj)
    for key, lines in blocks.items():
        # the widget pages ("... N more" asks for the next page) where text leaves rows out
        lines = [line for line in lines if not re.fullmatch(r"\.\.\. \d+ more", line)]
        where = shown[key] if key == "" or isinstance(obj, fi.Inspection) else shown["*"]
        assert [line for line in lines if line not in where] == [], key
    if isinstance(obj, fi.Inspection):  # what the parity has to cover, so that it can fail
        assert set(blocks) == {"", "output", "variables", "intermediates", "binding"} | (
            {"mutations"} if obj.diffs else set()) | ({"gradients"} if obj.grads is not None else set())
        if make is noted_inspection:
            assert obj.notes and all(f"note: {n}" in blocks[""] for n in obj.notes)
        if make is nan_inspection:
            assert "first non-finite: d3:__call__[0]" in blocks["intermediates"]
        if make is grad_inspection:
            grads = blocks["gradients"]
            assert "first non-finite gradient (backward order): d1:__call__[0]" in grads
            assert any(line.startswith("[    n/a     ] params/d1/kernel: !! 12 non-finite; ratio ")
                       for line in grads)  # an update scale
            assert any(line.startswith("[####........] #1 root (_SqrtAndInput): |grad| ") for line in grads)  # a call's
            assert any(line.startswith("0: float32[2,4]") for line in grads)  # one of its gradients
            assert any(line.startswith("kernel: !! 12 nan; float32[3,4]") for line in grads)  # a parameter's
    else:
        assert {"output", "variables", "intermediates"} <= set(blocks)


def test_sections_are_the_same_for_every_view_and_name_what_each_row_is():
    insp = nan_inspection()
    doc = document(insp, timings=False)
    assert [s.key for s in doc.sections] == ["output", "variables", "mutations", "intermediates", "binding"]
    assert [s.key for s in sections(insp)] == [s.key for s in doc.sections]
    assert doc.section("mutations").empty and not doc.section("output").empty
    calls = doc.section("intermediates").rows
    assert (calls[0].name, calls[0].summary, calls[0].link) == ("first non-finite", "d3:__call__[0]", "#2")
    third = calls[3]
    assert ((third.name, third.kind, third.id, third.first, third.nonfinite)
            == ("#2 d3", "Dense", "#2", True, True))
    assert third.leaf is insp.calls[2].outputs[0]
    binding = doc.section("binding").rows
    assert [r.name for r in binding] == ["/:__call__"] and [r.name for r in binding[0].children] == [
        "d1:__call__", "d2:__call__", "d3:__call__"]


def test_limits_count_what_they_leave_out_and_keep_the_first_nonfinite_call():
    insp = nan_inspection()
    doc = document(insp, max_children=1, max_depth=2)
    variables = doc.section("variables")
    (params,) = variables.rows
    assert [r.name for r in params.children] == ["d1"] and params.more == 2
    assert params.children[0].children == [] and params.children[0].more == 2  # below max_depth
    calls = doc.section("intermediates")
    assert [r.name for r in calls.rows] == ["first non-finite", "#0 d1", "#2 d3"]
    assert calls.more == 2
    text = fi.Inspection.to_text(insp, max_children=1)
    assert "    ... 2 more" in text


# -- activations by depth ------------------------------------------------------------
def test_depth_chart_in_static_html_and_widget_matches_its_text():
    """One point per captured call (sows included, drawn as hollow squares) in execution order, each the
    numbers of the call's first output; the SVG's titles are the text lines; NaN calls are ticks; names escaped."""
    import html as stdlib_html

    from inspector.views.depth import depth_points, depth_svg, depth_text, point_line

    class Evil(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.sow("intermediates", "seen", x)
            return nn.Dense(3, name="<b>d</b>")(x) * jnp.float32(jnp.nan)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(4)(x)
            return Evil()(nn.relu(x)), x

    m, x = Net(), jnp.ones((2, 3))
    v = m.init(jax.random.key(0), x)
    insp = fi.inspect_apply(lambda mod, x: mod(x), m, capture_intermediates=True)(v, x)
    points = depth_points(insp)
    calls = insp.calls
    assert any(c.sown for c in calls) and [p.order for p in points] == [c.order for c in calls]
    for p, c in zip(points, calls):
        st = c.outputs[0].stats
        assert (p.mean, p.std, p.abs_max, p.nonfinite, p.sown) == (st.mean, st.std, st.abs_max, st.nonfinite, c.sown)
    assert points[-1].label.endswith(" 0")  # the root returned two arrays: the first one's path
    text = depth_text(points)
    assert text.splitlines()[1:] == [point_line(p) for p in points]
    svg = depth_svg(points)
    titles = [stdlib_html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", svg)]
    assert set(titles) == {point_line(p) for p in points}
    assert "<b>" not in svg and "&lt;b&gt;d" in svg
    assert svg.count("<line") == sum(1 for p in points if p.nonfinite)  # the NaN calls
    assert svg.count('style="fill:none;stroke:') >= 2 * sum(1 for p in points if p.sown)  # hollow squares
    assert svg in html.render_page(insp)
    w = InspectionWidget(insp)
    try:
        assert svg in w.depth_html  # the front end draws it above the Intermediates tree
        assert "depth_html" in w.get_state() and "intermediates" in w.tree_names
    finally:
        w.close()
