"""The sections every inspection has: output, variables, mutations, intermediates and the binding trace,
each with its row builders (one row without the rows below it, which the sections fill in up to their
limits and the widget's row sources ask for a page at a time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from inspector.model import BindingCall, CollectionDiff, Inspection, Leaf, LeafDiff, MethodCall, Node, path_str
from inspector.views import format as F
from inspector.views.depth import depth_points
from inspector.views.viewmodel import NO_LIMITS, Limits, Row, RowStatus, Section, limited


def output_row(leaf: Leaf) -> Row:
    """A leaf of the returned value, ``output`` itself for a returned array."""
    return Row(path_str(leaf.path) if leaf.path else "output", F.value(leaf), nonfinite=bool(leaf.nonfinite),
               id=path_str(("output",) + leaf.path), leaf=leaf, fact=F.fact(leaf))


def output(insp: Inspection, limits: Limits = NO_LIMITS) -> Section:
    """What the call returned: one line for a single array, else a row per leaf."""
    if insp.kind == "init":
        return Section("output", "output", empty="init returns the variables only")
    if len(insp.outputs) == 1 and not insp.outputs[0].path:
        leaf = insp.outputs[0]
        return Section("output", "output", F.with_fact(F.fact(leaf), F.value(leaf)), nonfinite=bool(leaf.nonfinite))
    shown, more = limited(insp.outputs, 1, limits)
    return Section("output", "output", F.plural(len(insp.outputs), "leaf"), [output_row(leaf) for leaf in shown], more,
                   nonfinite=any(leaf.nonfinite for leaf in insp.outputs))


def variable_row(node: Node) -> Row:
    """A collection, a module or a variable: its totals, or the stored array."""
    return Row(node.name, F.node_summary(node), nonfinite=bool(node.nonfinite), id=path_str(node.path), leaf=node.leaf,
               fact=F.node_fact(node))


def node_rows(node: Node, level: int, limits: Limits) -> tuple[list[Row], int]:
    """Rows for ``node``'s children at ``level`` (1 under a section), and how many are left out."""
    shown, more = limited(list(node.children.values()), level, limits)
    rows = []
    for child in shown:
        row = variable_row(child)
        row.children, row.more = node_rows(child, level + 1, limits)
        rows.append(row)
    return rows, more


def variables(insp: Inspection, limits: Limits = NO_LIMITS) -> Section:
    """Collection -> module path -> variable, each level summarised."""
    root = insp.variables.root
    rows, more = node_rows(root, 1, limits)
    return Section("variables", "variables", F.with_fact(F.node_fact(root), F.node_summary(root)), rows, more,
                   bool(root.nonfinite), open_depth=2)


def mutations(insp: Inspection, limits: Limits = NO_LIMITS) -> Section:
    """Per collection that ``mutable=`` let the call write, its leaves, most changed first."""
    if not insp.diffs:
        return Section("mutations", "mutated", empty="no mutable collections (mutable=False)")
    shown, more = limited(insp.diffs, 1, limits)
    rows = []
    for diff in shown:
        deltas, left = limited(diff.ranked(), 2, limits)
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
               status=cast(RowStatus, d.status), id=path_str(d.path), leaf=d.after or d.before, fact=fact)


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
    outputs, row.more = limited(call_outputs(call), 2, limits)
    row.children = [call_input_row(call, leaf) for leaf in call_inputs(call)]
    row.children += [call_output_row(call, leaf) for leaf in outputs]
    return row


def intermediates(insp: Inspection, limits: Limits = NO_LIMITS) -> Section:
    """Captured calls in execution order; the first with a NaN or Inf is named first and always listed."""
    if not insp.calls:
        return Section("intermediates", "intermediates", empty="nothing captured")
    first = insp.first_nonfinite()
    shown, _ = limited(insp.calls, 1, limits)
    calls = list(shown)
    if first is not None and all(c is not first for c in calls):
        calls.append(first)  # what the "first non-finite" row links to is always there
    rows = [] if first is None else [first_row(first)]
    labels = F.call_labels(insp.calls)
    rows += [_call_row(call, first, limits, labels[call.order]) for call in calls]
    summary = f"{F.plural(len(insp.calls), 'call')} in execution order" + ("" if insp.kept else ", statistics only")
    return Section("intermediates", "intermediates", summary, rows, len(insp.calls) - len(calls),
                   first is not None, open_depth=0, depth=depth_points(insp))


def binding_trace(insp: Inspection, limits: Limits = NO_LIMITS) -> Section:
    """Every wrapped method call of the trace, nested as they ran, with what each touched."""
    if not insp.binding:
        return Section("binding", "binding", empty="no method calls recorded")
    kids = binding_children(insp.binding)

    def rows(parent: int | None, level: int) -> tuple[list[Row], int]:
        shown, more = limited(kids.get(parent, []), level, limits)
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
