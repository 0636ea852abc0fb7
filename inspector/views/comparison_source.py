"""The rows of a comparison's widget (see :class:`~inspector.views.row_source.RowSource`)."""

from __future__ import annotations

from inspector.model import Comparison, LeafDelta, Order, path_matches
from inspector.names import safe
from inspector.views import format as F
from inspector.views.comparison_sections import COMPARED, compared, delta_row, equal_id, equal_row
from inspector.views.row_source import PAGE, RowSource, WireRow, lower
from inspector.views.viewmodel import HEAD, Row


class ComparisonSource(RowSource[LeafDelta]):
    """Rows for a comparison: a row per section (its title line), then its differing leaves in
    execution order (``order='size'``: largest first) with the first divergence marked, then a folded
    row of its equal leaves (id :func:`~inspector.views.comparison_sections.equal_id`) that opens on request."""

    def __init__(self, comparison: Comparison, order: Order = "execution"):
        self.comparison = comparison
        self.order = order
        self.first = comparison.first_divergence()
        self.heads = {key: compared(comparison, key, HEAD, order, self.first) for key in COMPARED}
        ordered = {key: comparison.ordered(key, order) for key in COMPARED}
        self.differ: dict[str, list[LeafDelta]] = {k: [d for d in items if not d.equal] for k, items in ordered.items()}
        self.equal: dict[str, list[LeafDelta]] = {k: [d for d in items if d.equal] for k, items in ordered.items()}
        self.by_id = {f"{d.section}:{d.key}": d for d in comparison.deltas}

    def heading(self) -> str:
        """The comparison's header line: who is compared, and where they first differ."""
        return safe(F.comparison_header(self.comparison))

    def _row(self, d: LeafDelta) -> WireRow:
        return lower(delta_row(d, d is self.first), detail=True)  # a click shows both arrays and their Δ

    def _rows(self, key: str) -> list[WireRow | LeafDelta]:
        equal = self.equal.get(key, [])
        out: list[WireRow | LeafDelta] = list(self.differ.get(key, []))
        if equal:
            out.append(lower(equal_row(key, equal), len(equal)))
        return out

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        if not id:
            rows = [lower(Row(s.title, s.summary, nonfinite=s.nonfinite, id=key), len(self._rows(key)))
                    for key, s in self.heads.items() if not s.empty]
            return rows[offset:offset + limit], len(rows)
        for key in COMPARED:
            if id == equal_id(key):
                equal = self.equal[key]
                return [self._row(d) for d in equal[offset:offset + limit]], len(equal)
        items = self._rows(id)
        return [r if isinstance(r, dict) else self._row(r) for r in items[offset:offset + limit]], len(items)

    def toward(self, id: str, until: str) -> str:
        if id in self.heads and until in self.by_id and self.by_id[until].equal:
            return equal_id(id)
        return until

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        hits = [d for key in COMPARED for d in self.differ[key] + self.equal[key] if path_matches(d.key, query)]
        return [self._row(d) for d in hits[:limit]], len(hits)

    def leaf(self, id: str) -> LeafDelta | None:
        return self.by_id.get(id)
