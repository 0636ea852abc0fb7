"""The gradients section of a gradient inspection (``fi.inspect_grad``) and its row builders: update
scales, the calls' gradient norms and the parameter gradients, with bars on one log axis."""

from __future__ import annotations

from collections.abc import Sequence

from inspector.model import GradNorm, Inspection, Leaf, MethodCall, Node, UpdateScale, path_str
from inspector.views import format as F
from inspector.views.inspection_sections import call_id, node_rows
from inspector.views.viewmodel import NO_LIMITS, Limits, LogAxis, Row, Section, limited


def scale_row(u: UpdateScale, axis: LogAxis | None = None) -> Row:
    """A parameter's update scale: ``|grad| / |param|`` and both norms; with ``axis``, ``|grad|`` as a bar."""
    finite = " of the finite elements" if u.nonfinite else ""
    row = Row(u.key, f"ratio {F.num(u.ratio)}, |grad| {F.num(u.grad_norm)}{finite}, |param| {F.num(u.param_norm)}",
              nonfinite=bool(u.nonfinite), id=f"scale:{u.key}",
              fact=f"!! {u.nonfinite:,} non-finite" if u.nonfinite else "")
    return axis.place(row, u.grad_norm, "|grad|") if axis is not None else row


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
    grads, row.more = limited(call.grads or [], 3, limits)
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


def gradients(insp: Inspection, limits: Limits = NO_LIMITS) -> Section:
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
        shown, head.more = limited(scales, 2, limits)
        head.children = [scale_row(u, axis) for u in shown]
    else:
        head.more = insp.grads.root.count  # one scale per parameter
    rows.append(head)
    head = activation_grads_row(insp)
    if axis is not None and norms is not None:
        by_order = {c.order: c for c in insp.calls}
        labels = F.call_labels(insp.calls)
        shown_norms, head.more = limited(norms, 2, limits)
        head.children = [_grad_row(n, by_order[n.order], axis, limits, labels[n.order]) for n in shown_norms]
    else:
        head.more = with_grads
    rows.append(head)
    head = param_grads_row(insp.grads.root)
    head.children, head.more = node_rows(insp.grads.root, 2, limits)
    rows.append(head)
    loss = "" if insp.loss is None else f"loss {F.num(insp.loss)}, "
    bars = "" if axis is None else f", bars: {axis.describe('|grad|')}"
    return Section("gradients", "gradients",
                   f"{loss}{with_grads} of {F.plural(len(insp.calls), 'call')} with gradients{bars}", rows,
                   nonfinite=any(r.nonfinite for r in rows), open_depth=1)
