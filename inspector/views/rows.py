"""Rows: each section of an inspection as a lazily expandable list of JSON-able summaries.

A :class:`RowSource` answers "the children of node ``id``, from ``offset``", "the
nodes matching a query" and "the leaf behind ``id``" without ever walking more
than it returns; widgets ask for what the user opens, nothing else.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypedDict, TypeVar

from inspector.model import (
    BindingCall, Comparison, Inspection, Leaf, LeafDelta, LeafDiff, MethodCall, Node, path_matches, path_str,
)
from inspector.names import parse_path
from inspector.views import format as F
from inspector.views.text import node_summary

PAGE = 200
Item = TypeVar("Item")  # what a leaf row stands for: a Leaf, a LeafDiff, a LeafDelta


class _RowFields(TypedDict):
    id: str  # unique within its source ('' addresses the root, which has no row)
    name: str
    summary: str
    n: int  # how many children (0: none, nothing to open)


class Row(_RowFields, total=False):
    """One row as the widget receives it (mirrored by the ``Row`` typedef in ``static/tree.js``)."""

    leaf: bool  # clicking the name shows its detail
    bad: bool  # holds a NaN or Inf
    cls: str  # a CSS class suffix: a diff status ('changed', 'added', ...) or 'first' (first non-finite)
    spark: str  # histogram sparkline
    children: list[Row]  # already filled in (rows opened at first paint)
    more: bool  # "... N more": a placeholder that asks for the next page of ``parent``
    parent: str
    offset: int


def leaf_summary(leaf: Leaf) -> str:
    return leaf.opaque if leaf.opaque is not None else f"{F.shape(leaf)} {F.nbytes(leaf.nbytes)} {F.stats(leaf.stats)}"


def _bad(leaf: Leaf | None) -> bool:
    return bool(leaf is not None and leaf.stats and leaf.stats.nonfinite)


def _spark(leaf: Leaf | None) -> str:
    stats = leaf.full_stats() if leaf is not None else None
    return F.spark(stats.hist) if stats is not None else ""


def _leaf_row(id: str, name: str, leaf: Leaf) -> Row:
    return {"id": id, "name": name, "summary": leaf_summary(leaf), "n": 0, "leaf": True, "bad": _bad(leaf),
            "spark": _spark(leaf)}


class RowSource(Generic[Item]):
    """Base: a tree of rows addressed by string ids (``''`` is the root)."""

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[Row], int]:
        raise NotImplementedError

    def search(self, query: str, limit: int = PAGE) -> tuple[list[Row], int]:
        raise NotImplementedError

    def leaf(self, id: str) -> Item | None:
        raise NotImplementedError

    def label(self, id: str) -> str:
        """A readable name for row ``id`` (detail titles)."""
        return id

    def page(self, id: str, offset: int = 0, limit: int = PAGE, until: str | None = None) -> list[Row]:
        """The children of ``id`` from ``offset``, then a :meth:`more_row` if some are left.

        With ``until``, as many pages as it takes to reach the child with that id, or
        ``[]`` when no child of ``id`` has it.
        """
        rows, total = self.children(id, offset, limit)
        if until is not None:
            while not any(r["id"] == until for r in rows):
                if offset + len(rows) >= total:
                    return []
                more, _ = self.children(id, offset + len(rows), limit)
                if not more:
                    return []
                rows += more
        return rows + self.more_row(id, offset + len(rows), total)

    def initial(self, open_depth: int = 1, budget: int = 100) -> list[Row]:
        """Root rows, with the first ``open_depth`` levels' children filled in (``budget`` rows)."""
        rows, total = self.children("", 0, budget)
        budget -= len(rows)
        self._fill(rows, open_depth, budget)
        return rows + self.more_row("", len(rows), total)

    def _fill(self, rows: list[Row], depth: int, budget: int) -> int:
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
    def more_row(parent: str, shown: int, total: int) -> list[Row]:
        """``[]`` when all ``total`` children of ``parent`` are shown, else one "... N more" row."""
        if shown >= total:
            return []
        return [{"id": f"{parent}\x00more", "more": True, "parent": parent, "offset": shown,
                 "name": f"... {total - shown} more", "summary": "", "n": 0}]


class OutputSource(RowSource[Leaf]):
    """Rows for what the call returned: its array leaves in order (none for ``init``).

    Ids are the keys ``Inspection[...]`` takes: ``'output'`` or ``'output/<path>'``.
    """

    def __init__(self, insp: Inspection):
        self.leaves = {self.leaf_id(leaf): leaf for leaf in insp.outputs} if insp.kind != "init" else {}

    @staticmethod
    def leaf_id(leaf: Leaf) -> str:
        return path_str(("output",) + leaf.path)

    def _row(self, id: str) -> Row:
        leaf = self.leaves[id]
        return _leaf_row(id, path_str(leaf.path) if leaf.path else "output", leaf)

    def children(self, id, offset=0, limit=PAGE):
        ids = list(self.leaves) if not id else []
        return [self._row(i) for i in ids[offset:offset + limit]], len(ids)

    def search(self, query, limit=PAGE):
        hits = [i for i in self.leaves if path_matches(i, query)]
        return [self._row(i) for i in hits[:limit]], len(hits)

    def leaf(self, id):
        return self.leaves.get(id)


class NodeSource(RowSource[Leaf]):
    """Rows for a :class:`Node` tree (variables); ids are node paths."""

    def __init__(self, root: Node):
        self.root = root

    def _node(self, id: str) -> Node | None:
        return self.root.find(parse_path(id)) if id else self.root

    def _row(self, node: Node, label: str | None = None) -> Row:
        leaf = node.leaf if not node.children else None
        return {"id": path_str(node.path), "name": label or node.name, "summary": node_summary(node),
                "n": len(node.children), "leaf": leaf is not None, "bad": bool(node.nonfinite), "spark": _spark(leaf)}

    def children(self, id, offset=0, limit=PAGE):
        node = self._node(id)
        if node is None:
            return [], 0
        kids = list(node.children.values())
        return [self._row(c) for c in kids[offset:offset + limit]], len(kids)

    def _walk(self, node: Node) -> Iterator[Node]:
        for child in node.children.values():
            yield child
            yield from self._walk(child)

    def search(self, query, limit=PAGE):
        rows, total = [], 0
        for node in self._walk(self.root):
            if path_matches(path_str(node.path), query):
                total += 1
                if len(rows) < limit:
                    rows.append(self._row(node, path_str(node.path)))
        return rows, total

    def leaf(self, id):
        node = self._node(id)
        return node.leaf if node is not None else None


class DiffSource(RowSource[LeafDiff]):
    """Rows for mutated collections: collection -> leaves, most changed first."""

    def __init__(self, insp: Inspection):
        self.diffs = {path_str((d.name,)): d for d in insp.diffs}  # ids in the key grammar
        self._ranked = {id: d.ranked() for id, d in self.diffs.items()}
        self._by_id = {path_str(x.path): x for d in insp.diffs for x in d.leaves}

    def _row(self, d: LeafDiff, label: str | None = None) -> Row:
        return {"id": path_str(d.path), "name": label or path_str(d.path[1:]), "summary": F.delta(d),
                "n": 0, "leaf": True, "cls": d.status, "bad": _bad(d.after), "spark": _spark(d.after or d.before)}

    def children(self, id, offset=0, limit=PAGE):
        if not id:
            rows = []
            for id, diff in self.diffs.items():
                counts = ", ".join(f"{len(diff.by_status(s))} {s}"
                                   for s in ("changed", "added", "unchanged", "removed") if diff.by_status(s))
                rows.append({"id": id, "name": diff.name, "summary": counts or "empty", "n": len(diff.leaves)})
            return rows[offset:offset + limit], len(rows)
        ranked = self._ranked.get(id, [])
        return [self._row(d) for d in ranked[offset:offset + limit]], len(ranked)

    def search(self, query, limit=PAGE):
        hits = [d for ranked in self._ranked.values() for d in ranked if path_matches(path_str(d.path), query)]
        return [self._row(d, path_str(d.path)) for d in hits[:limit]], len(hits)

    def leaf(self, id):
        return self._by_id.get(id)


class CallSource(RowSource[Leaf]):
    """Rows for intermediates: calls in execution order -> their output leaves."""

    def __init__(self, insp: Inspection):
        self.calls = insp.calls
        self.first = insp.first_nonfinite()

    @staticmethod
    def call_id(call: MethodCall) -> str:
        return f"#{call.order}"

    def _sub(self, call: MethodCall, leaf: Leaf) -> str:
        return path_str(leaf.path[len(call.path) + 1:]) if len(leaf.path) > len(call.path) + 1 else ""

    def _row(self, call: MethodCall) -> Row:
        kind = "sow" if call.sown else call.module_type
        single = len(call.outputs) == 1 and not self._sub(call, call.outputs[0])
        summary = f"({kind})" + (f" {leaf_summary(call.outputs[0])}" if single else f" {len(call.outputs)} outputs")
        leaf = call.outputs[0] if single else None
        return {"id": self.call_id(call), "name": f"#{call.order} {call.key}", "summary": summary,
                "n": 0 if single else len(call.outputs), "leaf": single, "bad": bool(call.nonfinite),
                "cls": "first" if call is self.first else "", "spark": _spark(leaf)}

    def _call(self, id: str) -> MethodCall | None:
        try:
            order = int(id.split("/", 1)[0].lstrip("#"))
        except ValueError:
            return None
        return self.calls[order] if 0 <= order < len(self.calls) else None

    def children(self, id, offset=0, limit=PAGE):
        if not id:
            return [self._row(c) for c in self.calls[offset:offset + limit]], len(self.calls)
        call = self._call(id)
        if call is None:
            return [], 0
        rows = [_leaf_row(f"{id}/{self._sub(call, leaf)}", self._sub(call, leaf) or "value", leaf)
                for leaf in call.outputs]
        return rows[offset:offset + limit], len(rows)

    def search(self, query, limit=PAGE):
        hits = [c for c in self.calls if path_matches(f"{c.key} {c.module_type}", query)
                or path_matches(path_str(c.path), query)]
        return [self._row(c) for c in hits[:limit]], len(hits)

    def leaf(self, id):
        call = self._call(id)
        if call is None:
            return None
        sub = id.split("/", 1)[1] if "/" in id else ""
        for leaf in call.outputs:
            if self._sub(call, leaf) == sub:
                return leaf
        return call.outputs[0] if len(call.outputs) == 1 else None

    def label(self, id):
        call = self._call(id)
        if call is None:
            return id
        sub = id.split("/", 1)[1] if "/" in id else ""
        return call.key + (f" {sub}" if sub else "")


class BindingSource(RowSource[Leaf]):
    """Rows for the binding trace: calls nested as they ran, with what each touched."""

    def __init__(self, insp: Inspection):
        self.calls = insp.binding
        self.kids: dict[int | None, list[BindingCall]] = {}
        for call in self.calls:
            self.kids.setdefault(call.parent, []).append(call)

    def _row(self, call: BindingCall, label: str | None = None) -> Row:
        touched = F.binding(call)
        return {"id": f"b{call.order}", "name": label or f"{call.key}",
                "summary": f"({call.module_type}) {touched}".rstrip(), "n": len(self.kids.get(call.order, ())),
                "cls": "changed" if call.writes else ""}

    def children(self, id, offset=0, limit=PAGE):
        parent = int(id[1:]) if id else None
        kids = self.kids.get(parent, [])
        return [self._row(c) for c in kids[offset:offset + limit]], len(kids)

    def search(self, query, limit=PAGE):
        hits = [c for c in self.calls if path_matches(f"{c.key} {c.module_type} {F.binding(c)}", query)]
        return [self._row(c, f"#{c.order} {c.key}") | {"n": 0} for c in hits[:limit]], len(hits)

    def leaf(self, id):
        return None

    def initial(self, open_depth: int = 4, budget: int = 100) -> list[Row]:
        """The timeline opens deeper than trees do: nesting is the point of it."""
        return super().initial(open_depth, budget)


class ComparisonSource(RowSource[LeafDelta]):
    """Rows for a comparison: section -> leaves, largest divergence first."""

    SECTIONS = ("output", "variables", "intermediates")

    def __init__(self, comparison: Comparison):
        self.ranked = {s: comparison.ranked(s) for s in self.SECTIONS}
        self.by_id = {f"{d.section}:{d.key}": d for d in comparison.deltas}

    def _row(self, d) -> Row:
        return {"id": f"{d.section}:{d.key}", "name": d.key, "summary": F.leaf_delta(d), "n": 0, "leaf": True,
                "cls": "" if d.status == "equal" else "changed",
                "bad": bool((d.a and d.a.stats and d.a.stats.nonfinite) or (d.b and d.b.stats and d.b.stats.nonfinite))}

    def children(self, id, offset=0, limit=PAGE):
        if not id:
            rows = [{"id": s, "name": s, "n": len(r),
                     "summary": f"{sum(1 for d in r if d.status != 'equal')} of {len(r)} differ"}
                    for s, r in self.ranked.items() if r]
            return rows[offset:offset + limit], len(rows)
        ranked = self.ranked.get(id, [])
        return [self._row(d) for d in ranked[offset:offset + limit]], len(ranked)

    def search(self, query, limit=PAGE):
        hits = [d for r in self.ranked.values() for d in r if path_matches(d.key, query)]
        return [self._row(d) for d in hits[:limit]], len(hits)

    def leaf(self, id: str) -> LeafDelta | None:
        return self.by_id.get(id)
