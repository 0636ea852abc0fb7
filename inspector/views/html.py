"""Static, self-contained HTML: the lowering of :mod:`~inspector.views.viewmodel` to a page
that works offline and without a kernel.

Tabs and folding are plain CSS (radio inputs and ``<details>``), so the file needs no
script and no network. Every piece of user-controlled text goes through :func:`esc`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from collections.abc import Iterator, Sequence

from inspector.model import Comparison, Inspection, Order
from inspector.views import format as F
from inspector.views.format import esc
from inspector.views import palette
from inspector.views.depth import depth_figure
from inspector.views.cost_section import CostOrder
from inspector.views.document import document
from inspector.views.viewmodel import FIRST_MARK, TAB_ORDER, Document, Row, Section, bar_text, more_line

_ids = itertools.count()


CSS = palette.custom_properties(".fi-root") + """
.fi-root{font:13px/1.45 var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,monospace);
color:var(--fi-fg);background:var(--fi-bg);padding:8px;border:1px solid var(--fi-line);border-radius:6px}
.fi-root .fi-head{font-weight:600;margin-bottom:6px}
.fi-root .fi-tabs>input{position:absolute;opacity:0;pointer-events:none}
.fi-root .fi-tabs>label{display:inline-block;padding:3px 10px;border:1px solid var(--fi-line);border-bottom:none;
border-radius:6px 6px 0 0;cursor:pointer;color:var(--fi-muted);margin-right:2px}
.fi-root .fi-tabs>input:checked+label{color:var(--fi-fg);font-weight:600;border-color:var(--fi-accent)}
.fi-root .fi-panel{display:none;border-top:1px solid var(--fi-line);padding-top:6px}
.fi-root .fi-note{color:var(--fi-chg)}
.fi-root details{margin-left:14px}.fi-root summary{cursor:pointer;list-style-position:outside}
.fi-root .fi-leaf{margin-left:14px;padding-left:12px}
.fi-root .fi-name{font-weight:600}.fi-root .fi-sum{color:var(--fi-muted)}
.fi-root .fi-bad,.fi-root .fi-bad .fi-sum{color:var(--fi-bad)}
.fi-root .fi-added{color:var(--fi-add)}.fi-root .fi-changed{color:var(--fi-chg)}
.fi-root .fi-removed{color:var(--fi-bad)}.fi-root .fi-unchanged{opacity:.7}
.fi-root .fi-first{outline:2px solid var(--fi-bad);border-radius:3px}
.fi-root .fi-mark{color:var(--fi-bad);font-weight:600}
.fi-root .fi-spark{letter-spacing:-1px;color:var(--fi-accent)}
.fi-root svg text{fill:var(--fi-fg)}.fi-root .fi-depth-block{margin:4px 0 8px 0}
.fi-root .fi-fact{font-weight:600}.fi-root .fi-bad .fi-fact{color:var(--fi-bad)}
.fi-root .fi-bar{display:inline-block;position:relative;width:8em;height:.8em;vertical-align:baseline;
border-left:1px solid var(--fi-muted);background:var(--fi-line)}
.fi-root .fi-bar-fill{position:absolute;left:0;top:0;bottom:0;background:var(--fi-accent)}
.fi-root .fi-bar-text{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.fi-root .fi-depth-caption{color:var(--fi-muted);font-size:11px}
.fi-root .fi-origin{color:var(--fi-bad);margin-bottom:6px}
"""


def _tab_css(count: int) -> str:
    """Shows the panel whose radio is checked (the n-th input goes with the n-th panel)."""
    return ",".join(f".fi-root .fi-tabs>input:nth-of-type({i}):checked~.fi-panel:nth-of-type({i})"
                    for i in range(1, count + 1)) + "{display:block}"


def _anchor(id: str) -> str:
    """The element id of a call's row (id ``#<order>``): links point at ``#fi-call-<order>``."""
    return f"fi-call-{id.lstrip('#')}"


def _spark(row: Row) -> str:
    stats = row.leaf.full_stats() if row.leaf is not None and not row.children else None
    spark = F.spark(stats.hist) if stats else ""
    return f' <span class="fi-spark">{esc(spark)}</span>' if spark else ""


def bar(row: Row) -> str:
    """A row's bar: a fixed-width box on the row's baseline, filled to ``row.bar`` of its width, with the
    exact value as its hover text; its text (for readers without CSS) is :func:`~inspector.views.viewmodel.bar_text`."""
    width = 0.0 if row.bar is None else 100 * row.bar
    return (f'<span class="fi-bar" title="{esc(row.bar_title)}" role="img" aria-label="{esc(row.bar_title)}">'
            f'<span class="fi-bar-fill" style="width:{width:.1f}%"></span>'
            f'<span class="fi-bar-text">{esc(bar_text(row))}</span></span> ')


def _label(row: Row) -> str:
    """``[bar] name (kind): fact; summary`` as spans; a link's summary is the link itself."""
    text = (bar(row) if row.bar_title else "") + f'<span class="fi-name">{esc(row.name)}</span>'
    if row.kind:
        text += f' <span class="fi-sum">({esc(row.kind)})</span>'
    if row.fact or row.summary:
        text += ": "
    if row.fact:
        text += f'<span class="fi-fact">{esc(row.fact)}</span>' + ("; " if row.summary else "")
    if row.link:
        text += f'<a href="#{_anchor(row.link)}">{esc(row.summary)}</a>'
    elif row.summary:
        text += f'<span class="fi-sum">{esc(row.summary)}</span>'
    mark = row.mark or (FIRST_MARK if row.first else "")
    if mark:
        text += f' <span class="fi-mark">{esc(mark)}</span>'
    return text + _spark(row)


def _more(count: int) -> str:
    return f'<div class="fi-leaf fi-sum">{esc(more_line(count))}</div>' if count else ""


def _classes(row: Row) -> list[str]:
    cls = ["fi-first" if row.first else "fi-bad"] if row.first or row.nonfinite else []
    return cls + ([f"fi-{row.status}"] if row.status else [])


def _rows(rows: Sequence[Row], more: int, level: int, open_depth: int, calls: bool = False) -> Iterator[str]:
    """Rows with rows below as ``<details>`` (open to ``open_depth`` levels), the others as lines.

    With ``calls`` (the intermediates), a call's row is always a ``<details>`` with an
    ``id``, so that a link can open it (a link to a closed one would not); a call that
    returned one array shows how it is stored inside."""
    for row in rows:
        call = calls and level == 1 and bool(row.id)
        if not (row.children or row.more or call):
            yield f'<div class="{" ".join(["fi-leaf"] + _classes(row))}">{_label(row)}</div>'
            continue
        attrs = f' id="{_anchor(row.id)}"' if call else ""
        if _classes(row):
            attrs += f' class="{" ".join(_classes(row))}"'
        if (level <= open_depth and not row.folded) or row.first:
            attrs += " open"
        if row.id and not call:
            attrs += f' data-path="{esc(row.id)}"'
        yield f"<details{attrs}><summary>{_label(row)}</summary>"
        if call and row.leaf is not None and row.leaf.opaque is None and not row.children:
            value = F.with_fact(F.fact(row.leaf), F.stored(row.leaf))
            yield f'<div class="fi-leaf{" fi-bad" if row.nonfinite else ""}">value: {esc(value)}</div>'
        yield from _rows(row.children, row.more, level + 1, open_depth)
        yield "</details>"
    yield _more(more)


def _title(section: Section) -> str:
    summary = f' <span class="fi-sum">{esc(section.summary)}</span>' if section.summary else ""
    return f'<span class="fi-name">{esc(section.title)}</span>:{summary}'


def _panel(section: Section) -> str:
    if section.empty:
        return f'<div class="fi-sum">{esc(section.empty)}</div>'
    cls = "fi-title fi-bad" if section.nonfinite else "fi-title"
    return (f'<div class="{cls}">{_title(section)}</div>{depth_figure(section.depth)}'
            + "".join(_rows(section.rows, section.more, 1, section.open_depth, section.key == "intermediates")))


def _root(doc: Document, body: str) -> str:
    notes = "".join(f'<div class="fi-note">note: {esc(n)}</div>' for n in doc.notes)
    origin = f'<div class="fi-origin">{esc(doc.origin)}</div>' if doc.origin else ""
    return (f'<div class="fi-root"><style>{CSS}</style><div class="fi-head">{esc(doc.header)}</div>{origin}{notes}'
            f'{body}</div>')


def tabs(doc: Document, selected: str = "variables") -> str:
    """``doc`` as an embeddable ``<div>`` (with its own ``<style>``): a tab per section."""
    uid = next(_ids)
    sections = sorted(doc.sections, key=lambda s: TAB_ORDER.index(s.key) if s.key in TAB_ORDER else len(TAB_ORDER))
    checked = next((i for i, s in enumerate(sections) if s.key == selected), 0)
    radios = "".join(
        f'<input type="radio" name="fi-tabs-{uid}" id="fi-tab-{uid}-{i}"{" checked" if i == checked else ""}>'
        f'<label for="fi-tab-{uid}-{i}" data-tab="{s.key}">{esc(s.key.capitalize())}</label>'
        for i, s in enumerate(sections))
    panels = "".join(f'<div class="fi-panel" data-panel="{s.key}">{_panel(s)}</div>' for s in sections)
    return _root(doc, f'<style>{_tab_css(len(sections))}</style><div class="fi-tabs">{radios}{panels}</div>')


def stacked(doc: Document) -> str:
    """``doc`` as an embeddable ``<div>``: each section that has something to show, open, one below the other."""
    return _root(doc, "".join(
        f'<details open><summary>{_title(s)}</summary>{"".join(_rows(s.rows, s.more, 1, s.open_depth))}</details>'
        for s in doc.sections if not s.empty))


def render_fragment(insp: Inspection, max_children: int | None = None, max_depth: int | None = None,
                    costs: bool | None = None, costs_order: CostOrder = "tree") -> str:
    """An embeddable ``<div>`` showing the sections as tabs; ``max_children`` bounds each level
    (the rest is summarised as "... N more") and levels deeper than ``max_depth`` are summarised. The Costs
    tab is there when ``insp.costs()`` was computed, or with ``costs=True`` (computed now; ``False``: never)."""
    return tabs(document(insp, max_children=max_children, max_depth=max_depth, costs=costs, costs_order=costs_order))


def render_page(insp: Inspection, title: str | None = None, costs: bool | None = None,
                costs_order: CostOrder = "tree") -> str:
    """A whole HTML document around :func:`render_fragment`."""
    title = title or f"{F.module_type(insp.module_type)} inspection"
    return ('<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width"><title>{esc(title)}</title></head>'
            f'<body style="margin:12px">{render_fragment(insp, costs=costs, costs_order=costs_order)}</body></html>\n')


def export(insp: Inspection, path: str | Path | None = None, costs: bool | None = None,
           costs_order: CostOrder = "tree") -> str:
    """:func:`render_page`, written to ``path`` when given (UTF-8). Returns the page. ``costs``: the Costs tab
    when computed (None), computed now (True) or never (False)."""
    page = render_page(insp, costs=costs, costs_order=costs_order)
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page


def render_comparison(comparison: Comparison, limit: int | None = None, order: Order = "execution") -> str:
    """A comparison as an embeddable ``<div>``: one open, foldable list per section, its differing leaves in
    ``order`` (``'execution'`` or ``'size'``), the equal ones folded under one count line."""
    return stacked(document(comparison, max_children=limit, order=order))
