"""Static, self-contained HTML: works offline and without a kernel.

Tabs and folding are plain CSS (radio inputs and ``<details>``), so the file needs no
script and no network. Every piece of user-controlled text goes through :func:`esc`.
"""

from __future__ import annotations

import html
import itertools
from pathlib import Path
from typing import Iterator

from inspector.model import Inspection, Node, path_str
from inspector.views import format as F
from inspector.views.text import header, node_summary

_ids = itertools.count()


def esc(text: object) -> str:
    """HTML-escaped ``str(text)`` (quotes included)."""
    return html.escape(str(text), quote=True)


CSS = """
.fi-root{--fi-fg:var(--jp-content-font-color1,#1f2328);--fi-bg:var(--jp-layout-color0,#fff);
--fi-muted:var(--jp-content-font-color2,#59636e);--fi-line:var(--jp-border-color2,#d1d9e0);
--fi-accent:var(--jp-brand-color1,#0969da);--fi-bad:var(--jp-error-color1,#cf222e);
--fi-add:var(--jp-success-color1,#1a7f37);--fi-chg:var(--jp-warn-color1,#9a6700);
font:13px/1.45 var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,monospace);
color:var(--fi-fg);background:var(--fi-bg);padding:8px;border:1px solid var(--fi-line);border-radius:6px}
@media (prefers-color-scheme:dark){.fi-root:not([data-theme=light]){--fi-fg:var(--jp-content-font-color1,#e6edf3);
--fi-bg:var(--jp-layout-color0,#0d1117);--fi-muted:var(--jp-content-font-color2,#9198a1);
--fi-line:var(--jp-border-color2,#3d444d);--fi-accent:var(--jp-brand-color1,#4493f8);
--fi-bad:var(--jp-error-color1,#f85149);--fi-add:var(--jp-success-color1,#3fb950);--fi-chg:var(--jp-warn-color1,#d29922)}}
.fi-root .fi-head{font-weight:600;margin-bottom:6px}
.fi-root .fi-tabs>input{position:absolute;opacity:0;pointer-events:none}
.fi-root .fi-tabs>label{display:inline-block;padding:3px 10px;border:1px solid var(--fi-line);border-bottom:none;
border-radius:6px 6px 0 0;cursor:pointer;color:var(--fi-muted);margin-right:2px}
.fi-root .fi-tabs>input:checked+label{color:var(--fi-fg);font-weight:600;border-color:var(--fi-accent)}
.fi-root .fi-panel{display:none;border-top:1px solid var(--fi-line);padding-top:6px}
.fi-root .fi-tabs>input:nth-of-type(1):checked~.fi-panel:nth-of-type(1),
.fi-root .fi-tabs>input:nth-of-type(2):checked~.fi-panel:nth-of-type(2),
.fi-root .fi-tabs>input:nth-of-type(3):checked~.fi-panel:nth-of-type(3),
.fi-root .fi-tabs>input:nth-of-type(4):checked~.fi-panel:nth-of-type(4){display:block}
.fi-root .fi-note{color:var(--fi-chg)}
.fi-root details{margin-left:14px}.fi-root summary{cursor:pointer;list-style-position:outside}
.fi-root .fi-leaf{margin-left:14px;padding-left:12px}
.fi-root .fi-name{font-weight:600}.fi-root .fi-sum{color:var(--fi-muted)}
.fi-root .fi-bad,.fi-root .fi-bad .fi-sum{color:var(--fi-bad)}
.fi-root .fi-added{color:var(--fi-add)}.fi-root .fi-changed{color:var(--fi-chg)}
.fi-root .fi-first{outline:2px solid var(--fi-bad);border-radius:3px}
.fi-root .fi-spark{letter-spacing:-1px;color:var(--fi-accent)}
"""


def _leaf_html(name: str, summary: str, bad: bool, spark: str = "", extra_cls: str = "") -> str:
    cls = "fi-leaf" + (" fi-bad" if bad else "") + (f" {extra_cls}" if extra_cls else "")
    sp = f' <span class="fi-spark">{esc(spark)}</span>' if spark else ""
    return f'<div class="{cls}"><span class="fi-name">{esc(name)}</span>: <span class="fi-sum">{esc(summary)}</span>{sp}</div>'


def _more(total: int, shown: int) -> str:
    return f'<div class="fi-leaf fi-sum">... {total - shown} more</div>' if total > shown else ""


def _node_html(node: Node, depth: int, open_depth: int, max_children: int | None,
               max_depth: int | None = None) -> Iterator[str]:
    children = list(node.children.values())
    shown = children[:max_children] if max_children is not None else children
    for child in shown:
        bad = bool(child.nonfinite)
        if max_depth is not None and depth >= max_depth and child.children:
            yield _leaf_html(child.name, node_summary(child), bad)  # summarised, not unfolded
            continue
        if child.leaf is not None and not child.children:
            stats = child.leaf.full_stats()
            yield _leaf_html(child.name, node_summary(child), bad, F.spark(stats.hist) if stats else "")
            continue
        attrs = " open" if depth < open_depth else ""
        cls = ' class="fi-bad"' if bad else ""
        yield (f'<details{attrs}{cls} data-path="{esc(path_str(child.path))}"><summary>'
               f'<span class="fi-name">{esc(child.name)}</span>: '
               f'<span class="fi-sum">{esc(node_summary(child))}</span></summary>')
        yield from _node_html(child, depth + 1, open_depth, max_children, max_depth)
        yield "</details>"
    yield _more(len(children), len(shown))


def _variables(insp: Inspection, open_depth: int, max_children: int | None,
               max_depth: int | None) -> Iterator[str]:
    yield f'<div class="fi-sum">{esc("variables: " + node_summary(insp.variables.root))}</div>'
    yield from _node_html(insp.variables.root, 0, open_depth, max_children, max_depth)


def _mutations(insp: Inspection, max_children: int | None) -> Iterator[str]:
    if not insp.diffs:
        yield '<div class="fi-sum">no mutable collections (mutable=False)</div>'
    for diff in insp.diffs:
        counts = ", ".join(f"{len(diff.by_status(s))} {s}" for s in ("changed", "added", "unchanged", "removed")
                           if diff.by_status(s))
        yield (f'<details open><summary><span class="fi-name">{esc(diff.name)}</span>: '
               f'<span class="fi-sum">{esc(counts or "empty")}</span></summary>')
        ranked = diff.ranked()
        for d in ranked[:max_children]:
            yield _leaf_html(path_str(d.path[1:]), F.delta(d), False, extra_cls=f"fi-{d.status}")
        yield _more(len(ranked), len(ranked[:max_children]))
        yield "</details>"


def _calls(insp: Inspection, max_children: int | None) -> Iterator[str]:
    if not insp.calls:
        yield '<div class="fi-sum">nothing captured</div>'
        return
    first = insp.first_nonfinite()
    if first is not None:
        yield f'<div class="fi-bad">first non-finite: <a href="#fi-call-{first.order}">{esc(first.key)}</a></div>'
    calls = insp.calls[:max_children]
    if first is not None and first not in calls:
        calls = calls + [first]
    for call in calls:
        kind = "sow" if call.sown else call.module_type
        cls = "fi-first" if call is first else ("fi-bad" if call.nonfinite else "")
        opened = " open" if call is first else ""  # a link to a closed <details> would not open it
        yield (f'<details id="fi-call-{call.order}" class="{cls}"{opened}><summary><span class="fi-name">#{call.order} '
               f'{esc(call.key)}</span> <span class="fi-sum">({esc(kind)})</span></summary>')
        for leaf in call.outputs:
            sub = path_str(leaf.path[len(call.path) + 1:]) if len(leaf.path) > len(call.path) + 1 else "value"
            summary = F.shape(leaf) + ("" if leaf.opaque is not None else " " + F.stats(leaf.stats))
            yield _leaf_html(sub, summary, bool(leaf.stats and leaf.stats.nonfinite),
                             F.spark(leaf.full_stats().hist) if leaf.stats else "")
        yield "</details>"
    yield _more(len(insp.calls), len(calls))


def _binding(insp: Inspection, max_children: int | None) -> Iterator[str]:
    if not insp.binding:
        yield '<div class="fi-sum">no method calls recorded</div>'
        return
    calls = insp.binding[:max_children]
    for call in calls:
        touched = F.binding(call)
        yield (f'<div class="fi-leaf" style="margin-left:{14 * call.depth + 14}px"><span class="fi-name">'
               f'{esc(call.key)}</span> <span class="fi-sum">({esc(call.module_type)}) {esc(touched)}</span></div>')
    yield _more(len(insp.binding), len(calls))


def render_fragment(insp: Inspection, open_depth: int = 2, max_children: int | None = None,
                    max_depth: int | None = None) -> str:
    """An embeddable ``<div>`` (with its own ``<style>``) showing the views as tabs;
    ``max_children`` bounds each level (the rest is summarised as "... N more") and
    nodes deeper than ``max_depth`` are summarised, not unfolded."""
    uid = next(_ids)
    tabs = [("Variables", "".join(_variables(insp, open_depth, max_children, max_depth))),
            ("Mutations", "".join(_mutations(insp, max_children))),
            ("Intermediates", "".join(_calls(insp, max_children))),
            ("Binding", "".join(_binding(insp, max_children)))]
    radios = "".join(
        f'<input type="radio" name="fi-tabs-{uid}" id="fi-tab-{uid}-{i}"{" checked" if i == 0 else ""}>'
        f'<label for="fi-tab-{uid}-{i}" data-tab="{name.lower()}">{name}</label>'
        for i, (name, _) in enumerate(tabs))
    panels = "".join(f'<div class="fi-panel" data-panel="{name.lower()}">{body}</div>' for name, body in tabs)
    notes = "".join(f'<div class="fi-note">note: {esc(n)}</div>' for n in insp.notes)
    return (f'<div class="fi-root"><style>{CSS}</style><div class="fi-head">{esc(header(insp))}</div>{notes}'
            f'<div class="fi-tabs">{radios}{panels}</div></div>')


def render_page(insp: Inspection, title: str | None = None) -> str:
    """A whole HTML document around :func:`render_fragment`."""
    title = title or f"{insp.module_type} inspection"
    return ('<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width"><title>{esc(title)}</title></head>'
            f'<body style="margin:12px">{render_fragment(insp)}</body></html>\n')


def write(insp: Inspection, path: str | Path) -> Path:
    """Writes :func:`render_page` to ``path`` and returns it."""
    path = Path(path)
    path.write_text(render_page(insp), encoding="utf-8")
    return path


def render_comparison(comparison, limit: int | None = None) -> str:
    """A comparison as an embeddable ``<div>``: one foldable list per section."""
    a, b = comparison.labels
    parts = [f'<div class="fi-root"><style>{CSS}</style><div class="fi-head">'
             f'{esc(f"Comparison: {a} vs {b}")}</div>']
    for section in ("output", "variables", "intermediates"):
        ranked = comparison.ranked(section)
        if not ranked:
            continue
        differ = sum(1 for d in ranked if d.status != "equal")
        parts.append(f'<details open><summary><span class="fi-name">{section}</span>: '
                     f'<span class="fi-sum">{differ} of {len(ranked)} differ</span></summary>')
        shown = ranked if limit is None else ranked[:limit]
        for d in shown:
            cls = "fi-changed" if d.status not in ("equal",) else ""
            parts.append(_leaf_html(d.key, F.leaf_delta(d), False, extra_cls=cls))
        parts.append(_more(len(ranked), len(shown)))
        parts.append("</details>")
    parts.append("</div>")
    return "".join(parts)
