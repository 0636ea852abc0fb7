"""The costs section (per-module cost, :mod:`inspector.costs`) and its row builders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from inspector.model import Inspection, path_str
from inspector.views import format as F
from inspector.views.viewmodel import NO_LIMITS, Limits, Row, Section, limited

if TYPE_CHECKING:
    from inspector.costs import Costs, ModuleCost


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
        computed: Costs = insp.costs()
        return computed
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


def costs_section(costs: Costs, limits: Limits = NO_LIMITS, order: CostOrder = "tree") -> Section:
    """Per-module cost: the rule, then the module tree (the root ``/`` first) with each subtree's FLOPs, share
    (a bar), bytes accessed, activation bytes and parameters, in ``order``."""
    kids = cost_children(costs, order)
    root = costs.modules[0] if costs.modules else None

    def rows(path: tuple[str, ...], level: int) -> tuple[list[Row], int]:
        shown, more = limited(kids.get(path, []), level, limits)
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
