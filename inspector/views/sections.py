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
from typing import TYPE_CHECKING, Literal, TypeVar, cast

from inspector.model import (
    BindingCall, CollectionDiff, Comparison, GradNorm, Inspection, Leaf, LeafDelta, LeafDiff, MethodCall, Node,
    UpdateScale, path_str,
)
from inspector.model import Order
from inspector.model import ComparedSection
from inspector.views import format as F
from inspector.views.depth import DepthPoint, depth_points

if TYPE_CHECKING:
    from inspector.costs import Costs, ModuleCost
    from inspector.origin import Origin

Status = Literal["", "changed", "added", "unchanged", "removed"]
FIRST_MARK = "<- first non-finite"
"""Follows the row of the first captured call whose output has a NaN or Inf, in every view."""
DIVERGENCE_MARK = "<- first divergence"
"""Follows the row of a comparison's first divergence (:meth:`~inspector.model.Comparison.first_divergence`)."""
BAR = 12
"""Width, in characters, of a bar in text (``[#####.......]``): the position of a value on a log axis."""


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
            for a binding call, ``<section>:<key>`` for a comparison; in ``gradients``, ``g#<order>`` for
            a call's gradient and ``g#<order>/<path>`` for one of its leaves (``/grad`` for an array's),
            ``scale:<key>`` for an update scale, key-grammar paths for parameter gradients; ``''`` for none.
        link: the ``id`` of the row this one points to, or ``''``.
        leaf: the array behind the row (histograms, previews), or None.
        fact: the row's key fact, said before its summary and never cut off (``!! 255 nan``,
            ``3/8 changed (1 to nan)``); may be empty.
        mark: a mark after the row (:data:`DIVERGENCE_MARK`); the first non-finite call's is ``first``'s.
        folded: the rows below are shown only on request (equal leaves of a comparison): text and rich
            show this row's line alone, folding views show them closed.
        bar: the position, in [0, 1], of the row's value on its section's common log axis (:class:`LogAxis`);
            None where the value is not positive and finite. Only where ``bar_title`` is set.
        bar_title: what the bar shows, with the exact value (hover text); ``''`` for a row without a bar.
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
    fact: str = ""
    mark: str = ""
    folded: bool = False
    bar: float | None = None
    bar_title: str = ""


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
        depth: the intermediates' activation statistics by depth, for views that draw them
            (static HTML, the widget); every call, whatever the limits.
    """

    key: str
    title: str
    summary: str = ""
    rows: list[Row] = dataclasses.field(default_factory=list)
    more: int = 0
    nonfinite: bool = False
    empty: str = ""
    open_depth: int = 1
    depth: list[DepthPoint] = dataclasses.field(default_factory=list, repr=False)


@dataclasses.dataclass
class Document:
    """What a view shows: a header line, the sections, and the notes (what flax dropped)."""

    header: str
    sections: list[Section]
    notes: list[str] = dataclasses.field(default_factory=list)
    origin: str = ""
    """The line after the header about the first NaN/Inf's operation (:func:`origin_line`); ``''`` for none."""

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


@dataclasses.dataclass(frozen=True)
class Limits:
    """How much a view lists: ``max_children`` rows per level (and per section), ``max_depth``
    levels below a section; None for all. What is left out is counted in ``more``."""

    max_children: int | None = None
    max_depth: int | None = None


TAB_ORDER = ("variables", "mutations", "intermediates", "costs", "gradients", "binding", "output")
"""The order of the sections as tabs, in the widget and the static page alike (the text views list
them in the document's order, output first)."""


def document(obj: Inspection | Comparison, *, max_children: int | None = None, max_depth: int | None = None,
             timings: bool = True, binding: bool = True, order: Order = "execution", costs: bool | None = None,
             costs_order: CostOrder = "tree") -> Document:
    """The view-model of an inspection (``timings`` in the header, the ``binding`` section; the ``costs``
    section: None (the default) when ``insp.costs()`` was already computed, True to compute it, False never;
    its modules in ``costs_order``, see :func:`costs_section`) or of a comparison (its leaves in ``order``:
    ``'execution'`` or ``'size'``); see :class:`Limits` for ``max_children`` and ``max_depth``."""
    limits = Limits(max_children, max_depth)
    if isinstance(obj, Comparison):
        return _comparison(obj, limits, order)
    parts = [output(obj), variables(obj, limits), mutations(obj, limits), intermediates(obj, limits)]
    cost = inspection_costs(obj, costs)
    if cost is not None:
        parts.append(cost if isinstance(cost, Section) else costs_section(cost, limits, costs_order))
    if obj.grads is not None:
        parts.append(gradients(obj, limits))
    if binding:
        parts.append(binding_trace(obj, limits))
    return Document(F.header(obj, timings), parts, list(obj.notes), origin_line(obj))


# -- the first NaN's operation (inspector.origin) ------------------------------------

ORIGIN_HINT = "call insp.nonfinite_origin() to find the operation"
"""What a view without a kernel says where the origin of a NaN can be asked but was not computed."""


def origin_words(origin: Origin) -> str:
    """One line naming where the first NaN/Inf was born: ``first NaN born at `log` in model.py:42
    (Net/Block_0.__call__)``; an input that held it, or why it is unknown."""
    if origin.kind == "op":
        nan, pos, neg = (sum(getattr(r, k) for r in origin.results) for k in ("nan", "posinf", "neginf"))
        what = "NaN" if nan or not (pos or neg) else "-Inf" if not pos else "+Inf" if not neg else "Inf"
        where = f" in {origin.where}" if origin.where else ""
        method = origin.function.rsplit(".", 1)[-1] if origin.function else ""
        scope = origin.name_stack + (f".{method}" if origin.name_stack and method else "")
        return f"first {what} born at `{origin.primitive}`{where}" + (f" ({scope})" if scope else "")
    if origin.kind == "input":
        return f"first NaN/Inf: already in input {origin.input_name}"
    return f"first NaN/Inf: operation unknown ({origin.reason})"


def origin_line(insp: Inspection) -> str:
    """The header's second line where the inspection holds a NaN/Inf: :func:`origin_words` when the origin
    was computed, else :data:`ORIGIN_HINT` where it can be asked (never computes it); ``''`` otherwise."""
    from inspector import origin as O

    done = O.computed(insp)
    if done is not None:
        return origin_words(done)
    return f"first NaN/Inf: {ORIGIN_HINT}" if O.available(insp) else ""


# -- per-module cost (inspector.costs) ------------------------------------------------

CostOrder = Literal["tree", "flops"]
"""How the costs section lists modules: ``'tree'`` (each module's children in the order they were first
called, as ``Costs.modules``) or ``'flops'`` (each module's children, most FLOPs first)."""


def inspection_costs(insp: Inspection, costs: bool | None) -> Costs | Section | None:
    """``insp``'s costs for a view: the computed ones (``costs=None``), computed now (``costs=True``; a
    section saying why where they cannot be), or None."""
    from inspector import costs as C

    if costs is False:
        return None
    done = C.computed(insp)
    if done is not None or not costs:
        return done
    try:
        return insp.costs()
    except Exception as e:  # noqa: BLE001 - said in the section, never raised by a view
        return Section("costs", "costs", empty=f"costs unavailable: {type(e).__name__}: {e}")


def cost_summary(m: ModuleCost, total: float) -> str:
    """``56 FLOPs (31.1%), 216 B accessed, 32 B activations, 16 params (64 B)``."""
    from inspector.costs import si

    share = f" ({100 * m.flops / total:.1f}%)" if total else ""
    return (f"{si(m.flops, 'FLOPs')}{share}, {si(m.bytes_accessed, 'B')} accessed, "
            f"{si(m.output_bytes, 'B')} activations, {si(m.params)} params ({si(m.param_bytes, 'B')})")


def cost_row(m: ModuleCost, total: float, root_type: str = "") -> Row:
    """A module subtree: its cost (:func:`cost_summary`) and its share of the FLOPs as a bar (linear)."""
    kind = m.module_type or root_type
    row = Row(path_str(m.path[-1:]) if m.path else "/", cost_summary(m, total), F.module_type(kind) if kind else "",
              id=cost_id(m))
    row.bar = m.flops / total if total else None
    row.bar_title = f"share of FLOPs {100 * m.flops / total:.1f}%" if total else "share of FLOPs: no FLOPs"
    return row


def cost_id(m: ModuleCost) -> str:
    """A module subtree's row id: its path (``/`` for the root)."""
    return path_str(m.path) if m.path else "/"


def cost_children(costs: Costs, order: CostOrder = "tree") -> dict[tuple[str, ...], list[ModuleCost]]:
    """The subtrees directly below each module path, in ``order``."""
    kids: dict[tuple[str, ...], list[ModuleCost]] = {}
    for m in costs.modules:
        if m.path:
            kids.setdefault(m.path[:-1], []).append(m)
    if order == "flops":
        for rows in kids.values():
            rows.sort(key=lambda m: -m.flops)  # stable: ties keep the tree's order
    return kids


def costs_totals(costs: Costs) -> str:
    """The costs section's title summary: the program's totals and peak memory."""
    from inspector.costs import si

    text = (f"{si(costs.flops, 'FLOPs')}, {si(costs.transcendentals)} transcendentals, "
            f"{si(costs.bytes_accessed, 'B')} accessed, {si(costs.params)} params ({si(costs.param_bytes, 'B')})")
    if costs.memory is not None:
        text += f", peak memory {si(costs.memory.peak_bytes, 'B')}"
    return text


RULE_ID = ":rule"
"""The id of the costs section's rule row (no module path is written with a bare ``:``)."""


def costs_rule_row(costs: Costs) -> Row:
    """The attribution rule, and XLA's own count of the program, as one row."""
    from inspector.costs import RULE, si

    xla = f"; XLA cost_analysis: {si(costs.xla['flops'], 'FLOPs')} (loop bodies once)" if "flops" in costs.xla else ""
    return Row("rule", RULE + xla, id=RULE_ID)


def costs_section(costs: Costs, limits: Limits = Limits(), order: CostOrder = "tree") -> Section:
    """Per-module cost: the rule, then the module tree (the root ``/`` first) with each subtree's FLOPs, share
    (a bar), bytes accessed, activation bytes and parameters, in ``order``."""
    kids = cost_children(costs, order)
    root = costs.modules[0] if costs.modules else None

    def rows(path: tuple[str, ...], level: int) -> tuple[list[Row], int]:
        shown, more = _level(kids.get(path, []), level, limits)
        out = []
        for m in shown:
            row = cost_row(m, costs.flops)
            row.children, row.more = rows(m.path, level + 1)
            out.append(row)
        return out, more

    top: list[Row] = [costs_rule_row(costs)]
    more = 0
    if root is not None and limits.max_depth != 0:
        head = cost_row(root, costs.flops, costs.module_type)
        head.children, head.more = rows((), 2)
        top.append(head)
    elif root is not None:
        more = 1
    how = "most FLOPs first" if order == "flops" else "tree order"
    return Section("costs", "costs", f"{costs_totals(costs)}; {how}", top, more, open_depth=3)


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


HEAD = Limits(max_depth=0)
"""No rows: a section's title line, flags and counts only (what a lazy view shows before it is opened)."""

# The row builders below make one row without the rows below it: the sections here fill
# those in up to their limits, the widget (views/rows.py) asks for them a page at a time.


def output_row(leaf: Leaf) -> Row:
    """A leaf of the returned value, ``output`` itself for a returned array."""
    return Row(path_str(leaf.path) if leaf.path else "output", F.value(leaf), nonfinite=bool(leaf.nonfinite),
               id=path_str(("output",) + leaf.path), leaf=leaf, fact=F.fact(leaf))


def output(insp: Inspection, limits: Limits = Limits()) -> Section:
    """What the call returned: one line for a single array, else a row per leaf."""
    if insp.kind == "init":
        return Section("output", "output", empty="init returns the variables only")
    if len(insp.outputs) == 1 and not insp.outputs[0].path:
        leaf = insp.outputs[0]
        return Section("output", "output", F.with_fact(F.fact(leaf), F.value(leaf)), nonfinite=bool(leaf.nonfinite))
    shown, more = _level(insp.outputs, 1, limits)
    return Section("output", "output", F.plural(len(insp.outputs), "leaf"), [output_row(leaf) for leaf in shown], more,
                   nonfinite=any(leaf.nonfinite for leaf in insp.outputs))


def variable_row(node: Node) -> Row:
    """A collection, a module or a variable: its totals, or the stored array."""
    return Row(node.name, F.node_summary(node), nonfinite=bool(node.nonfinite), id=path_str(node.path), leaf=node.leaf,
               fact=F.node_fact(node))


def _tree(node: Node, level: int, limits: Limits) -> tuple[list[Row], int]:
    """Rows for ``node``'s children at ``level`` (1 under a section), and how many are left out."""
    shown, more = _level(list(node.children.values()), level, limits)
    rows = []
    for child in shown:
        row = variable_row(child)
        row.children, row.more = _tree(child, level + 1, limits)
        rows.append(row)
    return rows, more


def variables(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Collection -> module path -> variable, each level summarised."""
    root = insp.variables.root
    rows, more = _tree(root, 1, limits)
    return Section("variables", "variables", F.with_fact(F.node_fact(root), F.node_summary(root)), rows, more,
                   bool(root.nonfinite), open_depth=2)


def mutations(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Per collection that ``mutable=`` let the call write, its leaves, most changed first."""
    if not insp.diffs:
        return Section("mutations", "mutated", empty="no mutable collections (mutable=False)")
    shown, more = _level(insp.diffs, 1, limits)
    rows = []
    for diff in shown:
        deltas, left = _level(diff.ranked(), 2, limits)
        row = collection_row(diff)
        row.children, row.more = [change_row(d) for d in deltas], left
        rows.append(row)
    return Section("mutations", "mutated", "", rows, more, any(r.nonfinite for r in rows))


def collection_row(diff: CollectionDiff) -> Row:
    """A mutated collection: how many of its leaves changed, were added, ..."""
    return Row(diff.name, F.status_counts(diff), nonfinite=any(d.after and d.after.nonfinite for d in diff.leaves),
               id=path_str((diff.name,)))


def change_row(d: LeafDiff) -> Row:
    """A leaf of a mutated collection, named by its path inside the collection: how it changed (the
    changed count first)."""
    fact, summary = F.delta_parts(d)
    return Row(path_str(d.path[1:]), summary, nonfinite=bool(d.after and d.after.nonfinite),
               status=cast(Status, d.status), id=path_str(d.path), leaf=d.after or d.before, fact=fact)


def call_id(call: MethodCall) -> str:
    """A call's row id: ``#<order>``."""
    return f"#{call.order}"


def call_outputs(call: MethodCall) -> list[Leaf]:
    """The rows below a call's row: its output leaves, none when it returned one array (its row shows it)."""
    return [] if len(call.outputs) == 1 and not call.output_path(call.outputs[0]) else call.outputs


def call_row(call: MethodCall, first: MethodCall | None, label: str | None = None) -> Row:
    """A captured call, ``#order label`` (``label``: :func:`~inspector.views.format.call_labels`'s, its
    key by default): its value, or how many outputs it had (``first``: the first non-finite call)."""
    name, kind, bad = f"#{call.order} {label or call.key}", F.call_kind(call), bool(call.nonfinite)
    if not call_outputs(call):
        leaf = call.outputs[0]
        return Row(name, F.value(leaf), kind, nonfinite=bad, first=call is first, id=call_id(call), leaf=leaf,
                   fact=F.fact(leaf))
    fact = f"!! {call.nonfinite:,} non-finite" if call.nonfinite else ""
    return Row(name, F.plural(len(call.outputs), "output"), kind, nonfinite=bad, first=call is first,
               id=call_id(call), fact=fact)


def call_output_row(call: MethodCall, leaf: Leaf) -> Row:
    """One output of a call, named by where it sits in the returned value."""
    sub = path_str(call.output_path(leaf))
    return Row(sub, F.value(leaf), nonfinite=bool(leaf.nonfinite), id=f"{call_id(call)}/{sub}", leaf=leaf,
               fact=F.fact(leaf))


INPUT_ID = "/<in>/"
"""Between a call's id and an input's path in the id of an input row: ``#3/<in>/args/0``."""


def call_inputs(call: MethodCall) -> list[Leaf]:
    """A call's inputs where :attr:`~inspector.model.MethodCall.inputs` has computed them (a view never
    re-runs a model for them), else none."""
    from inspector.replay import computed_inputs

    return computed_inputs(call) or []


def call_input_row(call: MethodCall, leaf: Leaf) -> Row:
    """One input of a call: ``in args/0: float32[4,8] mean ...`` (``in kwargs/train: True``)."""
    sub = path_str(leaf.path)
    return Row(f"in {sub}", F.value(leaf), nonfinite=bool(leaf.nonfinite), id=f"{call_id(call)}{INPUT_ID}{sub}",
               leaf=leaf if leaf.opaque is None else None, fact=F.fact(leaf))


def first_row(first: MethodCall) -> Row:
    """The row that names the first call whose output has a NaN or Inf, and links to it."""
    return Row("first non-finite", first.key, nonfinite=True, link=call_id(first))


def _call_row(call: MethodCall, first: MethodCall | None, limits: Limits, label: str | None = None) -> Row:
    row = call_row(call, first, label)
    outputs, row.more = _level(call_outputs(call), 2, limits)
    row.children = [call_input_row(call, leaf) for leaf in call_inputs(call)]
    row.children += [call_output_row(call, leaf) for leaf in outputs]
    return row


def intermediates(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Captured calls in execution order; the first with a NaN or Inf is named first and always listed."""
    if not insp.calls:
        return Section("intermediates", "intermediates", empty="nothing captured")
    first = insp.first_nonfinite()
    shown, _ = _level(insp.calls, 1, limits)
    calls = list(shown)
    if first is not None and all(c is not first for c in calls):
        calls.append(first)  # what the "first non-finite" row links to is always there
    rows = [] if first is None else [first_row(first)]
    labels = F.call_labels(insp.calls)
    rows += [_call_row(call, first, limits, labels[call.order]) for call in calls]
    summary = f"{F.plural(len(insp.calls), 'call')} in execution order" + ("" if insp.kept else ", statistics only")
    return Section("intermediates", "intermediates", summary, rows, len(insp.calls) - len(calls),
                   first is not None, open_depth=0, depth=depth_points(insp))


def scale_row(u: UpdateScale, axis: LogAxis | None = None) -> Row:
    """A parameter's update scale: ``|grad| / |param|`` and both norms; with ``axis``, ``|grad|`` as a bar."""
    finite = " of the finite elements" if u.nonfinite else ""
    row = Row(u.key, f"ratio {F.num(u.ratio)}, |grad| {F.num(u.grad_norm)}{finite}, |param| {F.num(u.param_norm)}",
              nonfinite=bool(u.nonfinite), id=f"scale:{u.key}",
              fact=f"!! {u.nonfinite:,} non-finite" if u.nonfinite else "")
    return axis.place(row, u.grad_norm, "|grad|") if axis is not None else row


@dataclasses.dataclass(frozen=True)
class LogAxis:
    """One log10 axis for every bar of a section: from ``10**lo`` (an empty bar) to ``10**hi`` (a full
    one), whole decades spanning the values it was made for (:meth:`of`)."""

    lo: int
    hi: int

    @classmethod
    def of(cls, values: Sequence[float]) -> LogAxis:
        """The whole decades around the positive finite ``values`` (one decade when they all lie in one,
        ``1e-1..1e0`` when there is none)."""
        logs = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
        if not logs:
            return cls(-1, 0)
        lo, hi = math.floor(min(logs)), math.ceil(max(logs))
        return cls(lo, hi if hi > lo else lo + 1)

    def position(self, value: float) -> float | None:
        """Where ``value`` lies on the axis, in [0, 1] (clipped); None unless it is positive and finite."""
        if not (value > 0 and math.isfinite(value)):
            return None
        return min(1.0, max(0.0, (math.log10(value) - self.lo) / (self.hi - self.lo)))

    def describe(self, what: str) -> str:
        """``|g| on a log axis 1e-08..1e+02``."""
        return f"{what} on a log axis 1e{self.lo:+03d}..1e{self.hi:+03d}"

    def place(self, row: Row, value: float, what: str) -> Row:
        """``row`` with the bar of ``value`` and its hover text (``|grad| 0.001234``: the exact value)."""
        row.bar = self.position(value)
        row.bar_title = f"{what} {value!r}" if isinstance(value, float) else f"{what} {value}"
        return row


def bar_text(row: Row) -> str:
    """A row's bar in text, a fixed-width column: ``[#####.......]`` (``[    n/a     ]`` without a value)."""
    if row.bar is None:
        return "[" + "n/a".center(BAR) + "]"
    filled = round(BAR * row.bar)
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def grad_axis(insp: Inspection, norms: Sequence[GradNorm] | None = None) -> LogAxis:
    """The one log axis of the gradients section's bars: the calls' ``|grad|`` (``norms``, measured
    when not given) and each parameter's (an update scale's ``|grad|``, read from its statistics here so
    that the scales need not be ranked before their row is opened)."""
    calls = insp.grad_norms() if norms is None else norms
    params = [g.stats.norm for g in insp.grads.leaves() if g.stats is not None] if insp.grads is not None else []
    return LogAxis.of([n.grad_norm for n in calls] + params)


def grad_row(n: GradNorm, call: MethodCall, axis: LogAxis, label: str | None = None) -> Row:
    """A captured call's gradient: its norm (a bar on ``axis``, see :func:`grad_axis`) beside its
    output's; links to the call's row."""
    finite = " of the finite elements" if n.nonfinite else ""
    row = Row(f"#{n.order} {label or n.key}",
              f"|grad| {F.num(n.grad_norm)}{finite}, |output| {F.num(n.activation_norm)}",
              F.call_kind(call), nonfinite=bool(n.nonfinite), id=f"g{call_id(call)}", link=call_id(call),
              fact=f"!! {n.nonfinite:,} non-finite" if n.nonfinite else "")
    return axis.place(row, n.grad_norm, "|grad|")


def grad_leaf_row(call: MethodCall, g: Leaf) -> Row:
    """One gradient of a call, named by where its output sits in the returned value (``grad`` for an array)."""
    sub = path_str(call.output_path(g)) if call.output_path(g) else "grad"
    return Row(sub, F.value(g), nonfinite=bool(g.nonfinite), id=f"g{call_id(call)}/{sub}", leaf=g, fact=F.fact(g))


def _grad_row(n: GradNorm, call: MethodCall, axis: LogAxis, limits: Limits, label: str | None = None) -> Row:
    row = grad_row(n, call, axis, label)
    grads, row.more = _level(call.grads or [], 3, limits)
    row.children = [grad_leaf_row(call, g) for g in grads]
    return row


def first_grad_row(first: MethodCall) -> Row:
    """The row that names the first call, in backward order, whose incoming gradient has a NaN or Inf."""
    return Row("first non-finite gradient (backward order)", first.key, nonfinite=True, link=call_id(first))


def update_scales_row(insp: Inspection) -> Row:
    """The head of the update scales (rows: :func:`scale_row`); flagged from the gradients' totals."""
    return Row("update scales", "|grad| / |param| per parameter, largest first",
               nonfinite=bool(insp.grads is not None and insp.grads.root.nonfinite), id="update scales")


def activation_grads_row(insp: Inspection) -> Row:
    """The head of the calls' gradient norms (rows: :func:`grad_row`)."""
    return Row("activation gradients", "|grad| per captured call, execution order",
               nonfinite=insp.first_nonfinite_grad() is not None, id="activation gradients")


def param_grads_row(root: Node) -> Row:
    """The head of the parameter gradients' tree (rows: :func:`variable_row`)."""
    return Row("parameter gradients", F.node_summary(root), nonfinite=bool(root.nonfinite), id="parameter gradients",
               fact=F.node_fact(root))


def gradients(insp: Inspection, limits: Limits = Limits()) -> Section:
    """What ``fi.inspect_grad`` adds: the first call, in backward order, whose incoming gradient has a
    NaN or Inf; ``|grad| / |param|`` per parameter, largest first; ``|grad|`` per captured call in
    execution order (the vanishing or exploding picture); the parameter gradients as a tree.

    With no rows asked for (:data:`HEAD`), nothing walks the gradients' leaves one by one."""
    if insp.grads is None:
        return Section("gradients", "gradients", empty="no gradients (inspect with fi.inspect_grad)")
    first = insp.first_nonfinite_grad()
    with_grads = sum(1 for c in insp.calls if c.grads)
    rows = [] if first is None else [first_grad_row(first)]
    norms = insp.grad_norms() if limits.max_depth != 0 else None
    axis = grad_axis(insp, norms) if norms is not None else None
    head = update_scales_row(insp)
    if axis is not None:
        scales = insp.update_scales()
        shown, head.more = _level(scales, 2, limits)
        head.children = [scale_row(u, axis) for u in shown]
    else:
        head.more = insp.grads.root.count  # one scale per parameter
    rows.append(head)
    head = activation_grads_row(insp)
    if axis is not None and norms is not None:
        by_order = {c.order: c for c in insp.calls}
        labels = F.call_labels(insp.calls)
        shown_norms, head.more = _level(norms, 2, limits)
        head.children = [_grad_row(n, by_order[n.order], axis, limits, labels[n.order]) for n in shown_norms]
    else:
        head.more = with_grads
    rows.append(head)
    head = param_grads_row(insp.grads.root)
    head.children, head.more = _tree(insp.grads.root, 2, limits)
    rows.append(head)
    loss = "" if insp.loss is None else f"loss {F.num(insp.loss)}, "
    bars = "" if axis is None else f", bars: {axis.describe('|grad|')}"
    return Section("gradients", "gradients",
                   f"{loss}{with_grads} of {F.plural(len(insp.calls), 'call')} with gradients{bars}", rows,
                   nonfinite=any(r.nonfinite for r in rows), open_depth=1)


def binding_trace(insp: Inspection, limits: Limits = Limits()) -> Section:
    """Every wrapped method call of the trace, nested as they ran, with what each touched."""
    if not insp.binding:
        return Section("binding", "binding", empty="no method calls recorded")
    kids = binding_children(insp.binding)

    def rows(parent: int | None, level: int) -> tuple[list[Row], int]:
        shown, more = _level(kids.get(parent, []), level, limits)
        out = []
        for call in shown:
            row = binding_row(call)
            row.children, row.more = rows(call.order, level + 1)
            out.append(row)
        return out, more

    top, more = rows(None, 1)
    return Section("binding", "binding", f"{F.plural(len(insp.binding), 'method call')} in order", top, more,
                   open_depth=4)


def binding_children(calls: Sequence[BindingCall]) -> dict[int | None, list[BindingCall]]:
    """The calls below each call, by its ``order``; ``None`` holds the top level (and the calls
    whose parent was not recorded)."""
    orders = {call.order for call in calls}
    kids: dict[int | None, list[BindingCall]] = {}
    for call in calls:
        kids.setdefault(call.parent if call.parent in orders else None, []).append(call)
    return kids


def binding_row(call: BindingCall) -> Row:
    """A method call of the trace: the module's class, what it read, wrote and drew."""
    return Row(call.key, F.binding(call), F.module_type(call.module_type),
               status="changed" if call.writes else "", id=binding_id(call))


def binding_id(call: BindingCall) -> str:
    """A binding call's row id: ``b<order>``."""
    return f"b{call.order}"


def _either_nonfinite(d: LeafDelta) -> bool:
    return bool((d.a and d.a.nonfinite) or (d.b and d.b.nonfinite))


def delta_row(d: LeafDelta, first: bool = False) -> Row:
    """A leaf of a comparison: how far ``b`` is from ``a``, the changed count first (``first``: the
    comparison's first divergence, marked)."""
    fact, summary = F.delta_parts(d)
    return Row(d.key, summary, nonfinite=_either_nonfinite(d), status="" if d.equal else "changed",
               id=f"{d.section}:{d.key}", fact=fact, mark=DIVERGENCE_MARK if first else "")


def equal_id(section: str) -> str:
    """The id of a comparison section's row of equal leaves."""
    return f"{section}\x00equal"


def equal_row(section: str, equal: Sequence[LeafDelta], limits: Limits = HEAD) -> Row:
    """One line for a section's equal leaves, ``16 equal leaves``, folded: the leaves below it are shown
    on request (text and rich show the line alone)."""
    shown, more = _level(equal, 2, limits)
    return Row(F.plural(len(equal), "equal leaf", "equal leaves"), id=equal_id(section), folded=True,
               children=[delta_row(d) for d in shown], more=more)


COMPARED: tuple[ComparedSection, ...] = ("output", "variables", "intermediates")
"""The sections of a comparison, in order."""


def compared(comparison: Comparison, key: ComparedSection, limits: Limits = Limits(), order: Order = "execution",
             first: LeafDelta | None = None) -> Section:
    """One section of a comparison: its differing leaves in ``order`` (``'execution'``, or ``'size'``:
    largest first), the first divergence (``first``, by default :meth:`~inspector.model.Comparison.first_divergence`)
    marked and always listed, then one folded row counting the equal leaves."""
    items = comparison.ordered(key, order)
    if not items:
        return Section(key, key, empty="nothing to compare")
    if first is None:
        first = comparison.first_divergence()
    differ = [d for d in items if not d.equal]
    equal = [d for d in items if d.equal]
    shown, more = _level(differ, 1, limits)
    listed = list(shown)
    if (first is not None and limits.max_depth != 0 and any(d is first for d in differ)
            and all(d is not first for d in listed)):
        listed.append(first)  # what the header names is always there
        more -= 1
    rows = [delta_row(d, d is first) for d in listed]
    if equal and (limits.max_depth is None or limits.max_depth >= 1):
        rows.append(equal_row(key, equal, limits))
    how = "in execution order" if order == "execution" else "largest first"
    return Section(key, key, f"{len(differ)} of {len(items)} differ, {how}", rows, more,
                   any(_either_nonfinite(d) for d in items))


def _comparison(comparison: Comparison, limits: Limits, order: Order = "execution") -> Document:
    keys = COMPARED + (("gradients",) if comparison.a.grads is not None or comparison.b.grads is not None else ())
    first = comparison.first_divergence()
    return Document(F.comparison_header(comparison), [compared(comparison, key, limits, order, first) for key in keys])


def line(row: Row) -> str:
    """A row as one line of text: ``[bar] name (kind): fact, summary``, marked when it is the first
    non-finite call (or carries a :attr:`Row.mark`). A bar (:func:`bar_text`) comes first, so that the bars
    of sibling rows line up in a column."""
    text = row.name + (f" ({row.kind})" if row.kind else "")
    said = F.with_fact(row.fact, row.summary)
    text += f": {said}" if said else ""
    if row.bar_title:
        text = f"{bar_text(row)} {text}"
    mark = row.mark or (FIRST_MARK if row.first else "")
    return text + (f" {mark}" if mark else "")


def title_line(section: Section) -> str:
    """A section's title line: ``title: summary`` (``title:`` without a summary)."""
    return f"{section.title}:" + (f" {section.summary}" if section.summary else "")


def more_line(count: int) -> str:
    return f"... {count} more"
