"""The rows of the Costs tab: per-module cost (see :class:`~inspector.views.row_source.RowSource`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from inspector.model import Leaf, path_matches, path_str
from inspector.views.cost_section import CostOrder, cost_children, cost_id, cost_row, costs_rule_row, costs_section
from inspector.views.row_source import PAGE, RowSource, WireRow, lower
from inspector.views.viewmodel import HEAD

if TYPE_CHECKING:
    from inspector.costs import Costs, ModuleCost


class CostSource(RowSource[Leaf]):
    """Rows for per-module cost (:func:`~inspector.views.cost_section.costs_section`): the rule, then the module
    tree, the root ``/`` first; ids are module paths (``/`` the root, ``:rule`` the rule). No row has a leaf."""

    def __init__(self, costs: Costs, order: CostOrder = "tree"):
        self.costs = costs
        self.head = costs_section(costs, HEAD, order)
        self.kids = cost_children(costs, order)
        self.by_id = {cost_id(m): m for m in costs.modules}

    def _row(self, m: ModuleCost, label: str | None = None) -> WireRow:
        row = cost_row(m, self.costs.flops, "" if m.path else self.costs.module_type)
        return lower(dataclasses.replace(row, name=label) if label else row, len(self.kids.get(m.path, [])),
                     detail=False)

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        if not id:
            rows = [lower(costs_rule_row(self.costs))] + [self._row(m) for m in self.costs.modules[:1]]
            return rows[offset:offset + limit], len(rows)
        m = self.by_id.get(id)
        kids = self.kids.get(m.path, []) if m is not None else []
        return [self._row(k) for k in kids[offset:offset + limit]], len(kids)

    def toward(self, id: str, until: str) -> str:
        m = self.by_id.get(until)
        if m is None or not id:
            return "/" if m is not None and m.path and not id else until
        depth = len(self.by_id[id].path) if id in self.by_id else 0
        return cost_id(next((c for c in self.costs.modules if c.path == m.path[:depth + 1]), m))

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        hits = [m for m in self.costs.modules if m.path and path_matches(f"{path_str(m.path)} {m.module_type}", query)]
        return [self._row(m, path_str(m.path)) for m in hits[:limit]], len(hits)

    def leaf(self, id: str) -> Leaf | None:
        return None

    def initial(self, open_depth: int = 2, budget: int = 100) -> list[WireRow]:
        """The rule and the root, open two levels deep."""
        return super().initial(open_depth, budget)
