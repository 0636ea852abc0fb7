"""The widget's lazy rows: the wire format (:class:`WireRow`) and :class:`RowSource`, the tree of them
a widget asks for a page at a time (each tab's source is in ``*_source(s).py``).

The rows are the view-model's (:mod:`~inspector.views.viewmodel`): each comes from its
section's row builder and is lowered by :func:`lower`, a page at a time. A :class:`RowSource`
answers "the children of node ``id``, from ``offset``", "the nodes matching a query"
and "the leaf behind ``id``" without ever walking more than it returns; widgets ask for
what the user opens, nothing else.
"""

from __future__ import annotations

from typing import Generic, TypedDict, TypeVar

from inspector.model import Leaf
from inspector.names import safe
from inspector.views import format as F
from inspector.views.viewmodel import Row, Section, more_line, title_line

PAGE = 200
Item = TypeVar("Item")  # what a leaf row stands for: a Leaf, a LeafDiff, a LeafDelta


class _RowFields(TypedDict):
    id: str  # unique within its source ('' addresses the root, which has no row)
    name: str
    summary: str
    n: int  # how many children (0: none, nothing to open)


class WireRow(_RowFields, total=False):
    """One row as the widget receives it (mirrored by the ``WireRow`` typedef in ``static/tree.js``).

    Fields left out are false or empty.
    """

    fact: str  # the row's key fact ('!! 255 nan', '3/8 changed'), shown before the summary, never cut off
    mark: str  # a mark after the row ('<- first divergence'); the first non-finite call's is its cls
    bar: float  # the value's position in [0, 1] on the section's common log axis (drawn in a fixed column)
    bar_title: str  # hover text of the bar, with the exact value; set on every row that has a bar column
    folded: bool  # its rows (a comparison's equal leaves) are shown only when it is opened
    kind: str  # the class behind the row, shown as "(kind)" after the name
    leaf: bool  # clicking the name shows its detail
    bad: bool  # holds a NaN or Inf
    cls: str  # a CSS class suffix: a diff status ('changed', 'added', ...) or 'first' (first non-finite)
    spark: str  # histogram sparkline
    children: list[WireRow]  # already filled in (rows opened at first paint)
    more: bool  # "... N more": a placeholder that asks for the next page of ``parent``
    parent: str
    offset: int


def _spark(leaf: Leaf | None) -> str:
    stats = leaf.full_stats() if leaf is not None else None
    return F.spark(stats.hist) if stats is not None else ""


def lower(row: Row, n: int = 0, detail: bool | None = None) -> WireRow:
    """A view-model row (its own fields, not the rows below) as the widget receives it.

    ``n``: how many rows are below it, to ask for. ``detail``: a click on its name shows a
    detail (by default: when it has an array behind it and nothing below). The first
    non-finite call is marked by its class (``cls: 'first'``) instead of text. Its text
    (name, kind, fact, summary, mark, bar title) is :func:`~inspector.names.safe`: no control or bidi
    character reaches a view. A row with a bar column has ``bar_title``, and ``bar`` where its value is
    positive and finite.
    """
    out: WireRow = {"id": row.id, "name": safe(row.name), "summary": safe(row.summary), "n": n}
    leaf = row.leaf if not n else None
    if row.fact:
        out["fact"] = safe(row.fact)
    if row.mark:
        out["mark"] = safe(row.mark)
    if row.bar_title:
        out["bar_title"] = safe(row.bar_title)
        if row.bar is not None:
            out["bar"] = row.bar
    if row.folded:
        out["folded"] = True
    if row.kind:
        out["kind"] = safe(row.kind)
    if detail if detail is not None else leaf is not None:
        out["leaf"] = True
    if row.nonfinite:
        out["bad"] = True
    cls = "first" if row.first else row.status
    if cls:
        out["cls"] = cls
    spark = _spark(leaf)
    if spark:
        out["spark"] = spark
    return out


class RowSource(Generic[Item]):
    """Base: a tree of rows addressed by string ids (``''`` is the root).

    ``head`` is the view-model's section the rows belong to (its rows left out), or None.
    """

    head: Section | None = None

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        raise NotImplementedError

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        raise NotImplementedError

    def leaf(self, id: str) -> Item | None:
        raise NotImplementedError

    def label(self, id: str) -> str:
        """A readable name for row ``id`` (detail titles)."""
        return id

    def toward(self, id: str, until: str) -> str:
        """The child of ``id`` that is row ``until`` or holds it below (``until`` itself where rows
        hold no rows that a widget reveals)."""
        return until

    def heading(self) -> str:
        """The line above the rows: the section's title line, or what it says when it has nothing to show
        (:func:`~inspector.names.safe`)."""
        head = self.head
        return "" if head is None else safe(head.empty or title_line(head))

    def page(self, id: str, offset: int = 0, limit: int = PAGE, until: str | None = None) -> list[WireRow]:
        """The children of ``id`` from ``offset``, then a :meth:`more_row` if some are left.

        With ``until``, as many pages as it takes to reach the child that is or holds that
        row (:meth:`toward`), or ``[]`` when no child of ``id`` from ``offset`` is or holds it.
        """
        rows, total = self.children(id, offset, limit)
        if until is not None:
            until = self.toward(id, until)
            while not any(r["id"] == until for r in rows):
                if offset + len(rows) >= total:
                    return []
                more, _ = self.children(id, offset + len(rows), limit)
                if not more:
                    return []
                rows += more
        return rows + self.more_row(id, offset + len(rows), total)

    def initial(self, open_depth: int = 1, budget: int = 100) -> list[WireRow]:
        """Root rows, with the first ``open_depth`` levels' children filled in (``budget`` rows)."""
        rows, total = self.children("", 0, budget)
        budget -= len(rows)
        self._fill(rows, open_depth, budget)
        return rows + self.more_row("", len(rows), total)

    def _fill(self, rows: list[WireRow], depth: int, budget: int) -> int:
        if depth <= 0:
            return budget
        for row in rows:
            if row["n"] and budget > 0:
                kids, total = self.children(row["id"], 0, min(PAGE, budget))
                budget -= len(kids)
                budget = self._fill(kids, depth - 1, budget)
                row["children"] = kids + self.more_row(row["id"], len(kids), total)
        return budget

    @staticmethod
    def more_row(parent: str, shown: int, total: int) -> list[WireRow]:
        """``[]`` when all ``total`` children of ``parent`` are shown, else one "... N more" row."""
        if shown >= total:
            return []
        return [{"id": f"{parent}\x00more", "more": True, "parent": parent, "offset": shown,
                 "name": more_line(total - shown), "summary": "", "n": 0}]
