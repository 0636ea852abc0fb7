"""Plain text: the lowering of :mod:`~inspector.views.viewmodel` that is the golden oracle.

Every other view shows each of these lines (``tests/test_views.py``). Every line goes
through :func:`~inspector.names.safe`, so names from user data never reach a terminal
with control or bidi characters unescaped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from inspector.model import Comparison, Inspection, Order
from inspector.names import safe
from inspector.views.cost_section import CostOrder
from inspector.views.document import document
from inspector.views.viewmodel import Document, Row, line, more_line, title_line

INDENT = "  "


def row_lines(rows: Sequence[Row], more: int, level: int = 1) -> Iterator[str]:
    """``rows`` and the rows below them, indented by level, then ``... N more``."""
    for row in rows:
        yield INDENT * level + line(row)
        if not row.folded:  # folded rows (a comparison's equal leaves) are one line here
            yield from row_lines(row.children, row.more, level + 1)
    if more:
        yield INDENT * level + more_line(more)


def lines(doc: Document) -> Iterator[str]:
    """The header, each section that has something to show, then the notes."""
    yield doc.header
    if doc.origin:
        yield doc.origin
    for section in doc.sections:
        if section.empty:
            continue
        yield title_line(section)
        yield from row_lines(section.rows, section.more)
    for note in doc.notes:
        yield f"note: {note}"


def _join(doc: Document) -> str:
    return "\n".join(map(safe, lines(doc))) + "\n"


def render(insp: Inspection, timings: bool = True, max_children: int | None = None,
           binding: bool = True, costs: bool | None = None, costs_order: CostOrder = "tree") -> str:
    """The whole inspection as text (``timings=False`` for stable golden files). The costs section is there
    when ``insp.costs()`` was computed, or with ``costs=True`` (computed now; ``False``: never), its modules
    in ``costs_order`` (``'tree'`` or ``'flops'``)."""
    return _join(document(insp, max_children=max_children, timings=timings, binding=binding, costs=costs,
                          costs_order=costs_order))


def render_comparison(comparison: Comparison, limit: int | None = 30, order: Order = "execution") -> str:
    """A comparison as text: per section, the differing leaves in execution order (``order='size'``: the
    largest divergences first), the first divergence marked, the equal leaves as one count line."""
    return _join(document(comparison, max_children=limit, order=order))
