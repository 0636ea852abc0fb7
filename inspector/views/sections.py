"""The one view-model: an Inspection or a Comparison as a document of sections of rows.

What a view shows (which sections, in which order, each row's name, summary and
flags, what a limit leaves out) is decided here once. Text, rich and static HTML are
lowerings of this tree that decide only how it looks, so the text golden files
constrain every view (``tests/test_views.py`` checks that each text line appears in
the others). Strings here are raw: each lowering escapes them for its medium.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal, TypeVar, cast

from inspector.model import (
    BindingCall, Comparison, GradNorm, Inspection, Leaf, LeafDelta, MethodCall, Node, UpdateScale, path_str,
)
from inspector.views import format as F

Status = Literal["", "changed", "added", "unchanged", "removed"]
FIRST_MARK = "<- first non-finite"
"""Follows the row of the first captured call whose output has a NaN or Inf, in every view."""


@dataclasses.dataclass
class Row:
    """One line of a view, ``name (kind): summary``, and the rows below it.

    Attributes:
        name: what the row is: a variable's name, ``#3 encoder:__call__[0]``, a key.
        summary: what it holds (shape and statistics, a delta, what a call touched); may be empty.
        kind: the class behind it, shown in parentheses after the name (``Dense``, ``sow``); may be empty.
        children: the rows below, in order.
        more: how many rows below were left out by a limit (shown as ``... N more``).
        nonfinite: a NaN or Inf at or below this row.
        first: the row of the first captured call whose output has a NaN or Inf.
        status: how a mutated or compared leaf changed (``''`` when the row is not a change).
        id: an address unique within its section: a key-grammar path (variables, output, mutations),
            ``#<order>`` for a call and ``#<order>/<path>`` for one of its outputs, ``b<order>``
            for a binding call, ``<section>:<key>`` for a comparison; ``''`` for none.
        link: the ``id`` of the row this one points to, or ``''``.
        leaf: the array behind the row (histograms, previews), or None.
    """

    name: str
    summary: str = ""
    kind: str = ""
    children: list[Row] = dataclasses.field(default_factory=list)
    more: int = 0
    nonfinite: bool = False
    first: bool = False
    status: Status = ""
    id: str = ""
    link: str = ""
    leaf: Leaf | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass
class Section:
    """One part of a document: a title line (``title: summary``) and its rows.

    Attributes:
        key: the same in every view: ``output``, ``variables``, ``mutations``, ``intermediates``,
            ``gradients`` (a gradient inspection only), ``binding`` (or a comparison's ``output``,
            ``variables``, ``intermediates``, and ``gradients`` when either side has them).
        title: the head of the title line (``mutated`` for ``mutations``).
        summary: the rest of the title line; may be empty.
        rows, more, nonfinite: as for :class:`Row`.
        empty: what a view that always shows this section says instead, when there is nothing
            to show (``''`` when there is); text and rich leave such a section out.
        open_depth: how many levels of rows a folding view shows open at first.
    """

    key: str
    title: str
    summary: str = ""
    rows: list[Row] = dataclasses.field(default_factory=list)
    more: int = 0
    nonfinite: bool = False
    empty: str = ""
    open_depth: int = 1


@dataclasses.dataclass
class Document:
    """What a view shows: a header line, the sections, and the notes (what flax dropped)."""

    header: str
    sections: list[Section]
    notes: list[str] = dataclasses.field(default_factory=list)

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


@dataclasses.dataclass(frozen=True)
class Limits:
    """How much a view lists: ``max_children`` rows per level (and per section), ``max_depth``
    levels below a section; None for all. What is left out is counted in ``more``."""

    max_children: int | None = None
    max_depth: int | None = None


def document(obj: Inspection | Comparison, *, max_children: int | None = None, max_depth: int | None = None,
             timings: bool = True, binding: bool = True) -> Document:
    """The view-model of an inspection (``timings`` in the header, the ``binding`` section)
    or of a comparison; see :class:`Limits` for ``max_children`` and ``max_depth``."""
    limits = Limits(max_children, max_depth)
    if isinstance(obj, Comparison):
        return _comparison(obj, limits)
    parts = [output(obj), variables(obj, limits), mutations(obj, limits), intermediates(obj, limits)]
    if obj.grads is not None:
        parts.append(gradients(obj, limits))
    if binding:
        parts.append(binding_trace(obj, limits))
    return Document(F.header(obj, timings), parts, list(obj.notes))


def sections(obj: Inspection | Comparison, *, max_children: int | None = None,
             max_depth: int | None = None) -> list[Section]:
    """The sections of :func:`document` (every one, empty ones included)."""
    return document(obj, max_children=max_children, max_depth=max_depth).sections


T = TypeVar("T")


def _level(items: Sequence[T], level: int, limits: Limits) -> tuple[Sequence[T], int]:
    """The items listed at ``level`` (1 directly under a section), and how many are left out."""
    if limits.max_depth is not None and level > limits.max_depth:
        return (), len(items)
    shown = items if limits.max_children is None else items[:limits.max_children]
    return shown, len(items) - len(shown)


def output(insp: Inspection) -> Section:
    """What the call returned: one line for a single array, else a row per leaf."""
    if insp.kind == "init":
        return Section("output", "output", empty="init returns the variables only")
    if len(insp.outputs) == 1 and not insp.outputs[0].path:
        leaf = insp.outputs[0]
        return Section("output", "output", F.value(leaf), nonfinite=bool(leaf.nonfinite))
    rows = [Row(path_str(leaf.path), F.value(leaf), nonfinite=bool(leaf.nonfinite),
                id=path_str(("output",) + leaf.path), leaf=leaf) for leaf in insp.outputs]
    return Section("output", "output", f"{len(insp.outputs)} leaves", rows,
                   nonfinite=any(r.nonfinite for r in rows))


def _tree(node: Node, level: int, limits: Limits) -> tuple[list[Row], int]:
    """Rows for ``node``'s children at ``level`` (1 under a section), and how many are left out."""
    shown, more = _level(list(node.children.values()), level, limits)
    rows = []
    for child in shown:
        below, left = _tree(child, level + 1, limits)
        rows.append(Row(child.name, F.node_summary(child), children=below, more=left,
                        nonfinite=bool(child.nonfinite), id=path_str(child.path), leaf=child.leaf))
    return rows, more


def variables(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Collection -> module path -> variable, each level summarised."""
    root = insp.variables.root
    rows, more = _tree(root, 1, limits)
    return Section("variables", "variables", F.node_summary(root), rows, more, bool(root.nonfinite), open_depth=2)


def mutations(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Per collection that ``mutable=`` let the call write, its leaves, most changed first."""
    if not insp.diffs:
        return Section("mutations", "mutated", empty="no mutable collections (mutable=False)")
    shown, more = _level(insp.diffs, 1, limits)
    rows = []
    for diff in shown:
        deltas, left = _level(diff.ranked(), 2, limits)
        below = [Row(path_str(d.path[1:]), F.delta(d), nonfinite=bool(d.after and d.after.nonfinite),
                     status=cast(Status, d.status), id=path_str(d.path), leaf=d.after or d.before) for d in deltas]
        rows.append(Row(diff.name, F.status_counts(diff), children=below, more=left,
                        nonfinite=any(r.nonfinite for r in below), id=path_str((diff.name,))))
    return Section("mutations", "mutated", "", rows, more, any(r.nonfinite for r in rows))


def call_id(call: MethodCall) -> str:
    """A call's row id: ``#<order>``."""
    return f"#{call.order}"


def _call_row(call: MethodCall, first: MethodCall | None, limits: Limits) -> Row:
    name, kind, bad = f"#{call.order} {call.key}", F.call_kind(call), bool(call.nonfinite)
    if len(call.outputs) == 1 and not call.output_path(call.outputs[0]):
        leaf = call.outputs[0]
        return Row(name, F.value(leaf), kind, nonfinite=bad, first=call is first, id=call_id(call), leaf=leaf)
    outputs, more = _level(call.outputs, 2, limits)
    below = []
    for leaf in outputs:
        sub = path_str(call.output_path(leaf))
        below.append(Row(sub, F.value(leaf), nonfinite=bool(leaf.nonfinite), id=f"{call_id(call)}/{sub}", leaf=leaf))
    return Row(name, f"{len(call.outputs)} outputs", kind, below, more, bad, call is first, id=call_id(call))


def intermediates(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Captured calls in execution order; the first with a NaN or Inf is named first and always listed."""
    if not insp.calls:
        return Section("intermediates", "intermediates", empty="nothing captured")
    first = insp.first_nonfinite()
    shown, _ = _level(insp.calls, 1, limits)
    calls = list(shown)
    if first is not None and all(c is not first for c in calls):
        calls.append(first)  # what the "first non-finite" row links to is always there
    rows = [] if first is None else [Row("first non-finite", first.key, nonfinite=True, link=call_id(first))]
    rows += [_call_row(call, first, limits) for call in calls]
    summary = f"{len(insp.calls)} calls in execution order" + ("" if insp.kept else ", statistics only")
    return Section("intermediates", "intermediates", summary, rows, len(insp.calls) - len(calls),
                   first is not None, open_depth=0)


BAR = 12
"""Width of the bar of a call's gradient norm, on a log scale spanning the calls' norms."""


def _scale_row(u: UpdateScale) -> Row:
    bad = f" !! {u.nonfinite} non-finite" if u.nonfinite else ""
    return Row(u.key, f"ratio {F.num(u.ratio)}, |grad| {F.num(u.grad_norm)}, |param| {F.num(u.param_norm)}{bad}",
               nonfinite=bool(u.nonfinite), id=f"scale:{u.key}")


def _bar(norm: float, low: float, high: float) -> str:
    """``norm`` as a bar of ``#``: empty at ``low``, full at ``high`` (log10 of the norms)."""
    if not norm > 0 or math.isinf(norm):
        return ""
    span = high - low
    return "#" * max(1, round(BAR * ((math.log10(norm) - low) / span if span else 1.0)))


def _grad_row(n: GradNorm, call: MethodCall, low: float, high: float, limits: Limits) -> Row:
    bad = f" !! {n.nonfinite} non-finite" if n.nonfinite else ""
    summary = f"|grad| {F.num(n.grad_norm)}, |output| {F.num(n.activation_norm)} {_bar(n.grad_norm, low, high)}{bad}"
    grads, more = _level(call.grads or [], 3, limits)
    below = []
    for g in grads:
        sub = path_str(call.output_path(g)) if call.output_path(g) else "grad"
        below.append(Row(sub, F.value(g), nonfinite=bool(g.nonfinite), id=f"g{call_id(call)}/{sub}", leaf=g))
    return Row(f"#{n.order} {n.key}", summary.rstrip(), F.call_kind(call), below, more, bool(n.nonfinite),
               id=f"g{call_id(call)}", link=call_id(call))


def gradients(insp: Inspection, limits: Limits = Limits()) -> Section:
    """What ``fi.inspect_grad`` adds: the first call, in backward order, whose incoming gradient has a
    NaN or Inf; ``|grad| / |param|`` per parameter, largest first; ``|grad|`` per captured call in
    execution order (the vanishing or exploding picture); the parameter gradients as a tree."""
    if insp.grads is None:
        return Section("gradients", "gradients", empty="no gradients (inspect with fi.inspect_grad)")
    first = insp.first_nonfinite_grad()
    rows = [] if first is None else [Row("first non-finite gradient (backward order)", first.key,
                                         nonfinite=True, link=call_id(first))]
    scales = insp.update_scales()
    shown, more = _level(scales, 2, limits)
    rows.append(Row("update scales", "|grad| / |param| per parameter, largest first",
                    children=[_scale_row(u) for u in shown], more=more, nonfinite=any(u.nonfinite for u in scales),
                    id="update scales"))
    norms = insp.grad_norms()
    logs = [math.log10(n.grad_norm) for n in norms if n.grad_norm > 0 and not math.isinf(n.grad_norm)]
    low, high = (min(logs), max(logs)) if logs else (0.0, 0.0)
    by_order = {c.order: c for c in insp.calls}
    shown_norms, more = _level(norms, 2, limits)
    rows.append(Row("activation gradients", "|grad| per captured call, execution order",
                    children=[_grad_row(n, by_order[n.order], low, high, limits) for n in shown_norms], more=more,
                    nonfinite=any(n.nonfinite for n in norms), id="activation gradients"))
    root = insp.grads.root
    below, left = _tree(root, 2, limits)
    rows.append(Row("parameter gradients", F.node_summary(root), children=below, more=left,
                    nonfinite=bool(root.nonfinite), id="parameter gradients"))
    loss = "" if insp.loss is None else f"loss {F.num(insp.loss)}, "
    return Section("gradients", "gradients", f"{loss}{len(norms)} of {len(insp.calls)} calls with gradients", rows,
                   nonfinite=any(r.nonfinite for r in rows), open_depth=1)


def binding_trace(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Every wrapped method call of the trace, nested as they ran, with what each touched."""
    if not insp.binding:
        return Section("binding", "binding", empty="no method calls recorded")
    orders = {call.order for call in insp.binding}
    kids: dict[int | None, list[BindingCall]] = {}
    for call in insp.binding:
        kids.setdefault(call.parent if call.parent in orders else None, []).append(call)

    def rows(parent: int | None, level: int) -> tuple[list[Row], int]:
        shown, more = _level(kids.get(parent, []), level, limits)
        out = []
        for call in shown:
            below, left = rows(call.order, level + 1)
            out.append(Row(call.key, F.binding(call), F.module_type(call.module_type), below, left,
                           status="changed" if call.writes else "", id=f"b{call.order}"))
        return out, more

    top, more = rows(None, 1)
    return Section("binding", "binding", f"{len(insp.binding)} method calls in order", top, more, open_depth=4)


def _delta_row(d: LeafDelta) -> Row:
    bad = bool((d.a and d.a.nonfinite) or (d.b and d.b.nonfinite))
    return Row(d.key, F.leaf_delta(d), nonfinite=bad, status="" if d.status == "equal" else "changed",
               id=f"{d.section}:{d.key}")


def _comparison(comparison: Comparison, limits: Limits) -> Document:
    a, b = comparison.labels
    header = (f"Comparison: {a} ({F.module_type(comparison.a.module_type)}) "
              f"vs {b} ({F.module_type(comparison.b.module_type)})")
    parts = []
    keys = ("output", "variables", "intermediates")
    if comparison.a.grads is not None or comparison.b.grads is not None:
        keys += ("gradients",)
    for key in keys:
        ranked = comparison.ranked(key)
        if not ranked:
            parts.append(Section(key, key, empty="nothing to compare"))
            continue
        shown, more = _level(ranked, 1, limits)
        differ = sum(1 for d in ranked if d.status != "equal")
        rows = [_delta_row(d) for d in shown]
        parts.append(Section(key, key, f"{differ} of {len(ranked)} differ", rows, more,
                             any(r.nonfinite for r in rows)))
    return Document(header, parts)


def line(row: Row) -> str:
    """A row as one line of text: ``name (kind): summary``, marked when it is the first non-finite call."""
    text = row.name + (f" ({row.kind})" if row.kind else "") + (f": {row.summary}" if row.summary else "")
    return text + (f" {FIRST_MARK}" if row.first else "")


def title_line(section: Section) -> str:
    """A section's title line: ``title: summary`` (``title:`` without a summary)."""
    return f"{section.title}:" + (f" {section.summary}" if section.summary else "")


def more_line(count: int) -> str:
    return f"... {count} more"
