"""Rows: each section of an inspection as a lazily expandable list of JSON-able rows.

The rows are the view-model's (:mod:`~inspector.views.sections`): each comes from its
row builder and is lowered by :func:`lower`, a page at a time. A :class:`RowSource`
answers "the children of node ``id``, from ``offset``", "the nodes matching a query"
and "the leaf behind ``id``" without ever walking more than it returns; widgets ask for
what the user opens, nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Generic, TypedDict, TypeVar

from inspector.model import (
    Comparison, GradNorm, Inspection, Leaf, LeafDelta, LeafDiff, MethodCall, Node, Order, path_matches, path_str,
)
from inspector.names import parse_path, safe

if TYPE_CHECKING:
    from inspector.costs import Costs, ModuleCost
from inspector.views import format as F
from inspector.views import sections as S

PAGE = 200
Item = TypeVar("Item")  # what a leaf row stands for: a Leaf, a LeafDiff, a LeafDelta


class _RowFields(TypedDict):
    id: str  # unique within its source ('' addresses the root, which has no row)
    name: str
    summary: str
    n: int  # how many children (0: none, nothing to open)


class Row(_RowFields, total=False):
    """One row as the widget receives it (mirrored by the ``Row`` typedef in ``static/tree.js``).

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
    children: list[Row]  # already filled in (rows opened at first paint)
    more: bool  # "... N more": a placeholder that asks for the next page of ``parent``
    parent: str
    offset: int


def _spark(leaf: Leaf | None) -> str:
    stats = leaf.full_stats() if leaf is not None else None
    return F.spark(stats.hist) if stats is not None else ""


def lower(row: S.Row, n: int = 0, detail: bool | None = None) -> Row:
    """A view-model row (its own fields, not the rows below) as the widget receives it.

    ``n``: how many rows are below it, to ask for. ``detail``: a click on its name shows a
    detail (by default: when it has an array behind it and nothing below). The first
    non-finite call is marked by its class (``cls: 'first'``) instead of text. Its text
    (name, kind, fact, summary, mark, bar title) is :func:`~inspector.names.safe`: no control or bidi
    character reaches a view. A row with a bar column has ``bar_title``, and ``bar`` where its value is
    positive and finite.
    """
    out: Row = {"id": row.id, "name": safe(row.name), "summary": safe(row.summary), "n": n}
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

    head: S.Section | None = None

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[Row], int]:
        raise NotImplementedError

    def search(self, query: str, limit: int = PAGE) -> tuple[list[Row], int]:
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
        return "" if head is None else safe(head.empty or S.title_line(head))

    def page(self, id: str, offset: int = 0, limit: int = PAGE, until: str | None = None) -> list[Row]:
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
                 "name": S.more_line(total - shown), "summary": "", "n": 0}]


class OutputSource(RowSource[Leaf]):
    """Rows for what the call returned: its array leaves in order (none for ``init``).

    Ids are the keys ``Inspection[...]`` takes: ``'output'`` or ``'output/<path>'``. A
    returned array is one row, ``output``, whose line is the section's title line.
    """

    def __init__(self, insp: Inspection):
        self.head = S.output(insp, S.HEAD)
        self.leaves = {path_str(("output",) + leaf.path): leaf for leaf in insp.outputs} if insp.kind != "init" else {}

    def heading(self) -> str:
        return "" if list(self.leaves) == ["output"] else super().heading()

    def _row(self, id: str) -> Row:
        return lower(S.output_row(self.leaves[id]))

    def children(self, id, offset=0, limit=PAGE):
        ids = list(self.leaves) if not id else []
        return [self._row(i) for i in ids[offset:offset + limit]], len(ids)

    def search(self, query, limit=PAGE):
        hits = [i for i in self.leaves if path_matches(i, query)]
        return [self._row(i) for i in hits[:limit]], len(hits)

    def leaf(self, id):
        return self.leaves.get(id)


class NodeSource(RowSource[Leaf]):
    """Rows for a :class:`Node` tree (variables); ids are node paths. ``head``: see :class:`RowSource`."""

    def __init__(self, root: Node, head: S.Section | None = None):
        self.root = root
        self.head = head

    @classmethod
    def variables(cls, insp: Inspection) -> NodeSource:
        """The variables of ``insp``, under their section's title line."""
        return cls(insp.variables.root, S.variables(insp, S.HEAD))

    def _node(self, id: str) -> Node | None:
        return self.root.find(parse_path(id)) if id else self.root

    def _row(self, node: Node, label: str | None = None) -> Row:
        row = S.variable_row(node)
        return lower(dataclasses.replace(row, name=label) if label else row, len(node.children))

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
        rows: list[Row] = []
        total = 0
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
        self.head = S.mutations(insp, S.HEAD)
        self.diffs = {path_str((d.name,)): d for d in insp.diffs}  # ids in the key grammar
        self._rankings: dict[str, list[LeafDiff]] = {}

    def _ranked(self, id: str) -> list[LeafDiff]:
        """The leaves of collection ``id``, most changed first (ranked when first opened)."""
        if id not in self._rankings:
            diff = self.diffs.get(id)
            self._rankings[id] = diff.ranked() if diff is not None else []
        return self._rankings[id]

    @functools.cached_property
    def _by_id(self) -> dict[str, LeafDiff]:
        return {path_str(d.path): d for diff in self.diffs.values() for d in diff.leaves}

    def _row(self, d: LeafDiff, label: str | None = None) -> Row:
        row = S.change_row(d)
        return lower(dataclasses.replace(row, name=label) if label else row)

    def children(self, id, offset=0, limit=PAGE):
        if not id:
            diffs = list(self.diffs.values())[offset:offset + limit]
            return [lower(S.collection_row(diff), len(diff.leaves)) for diff in diffs], len(self.diffs)
        ranked = self._ranked(id)
        return [self._row(d) for d in ranked[offset:offset + limit]], len(ranked)

    def search(self, query, limit=PAGE):
        hits = [d for id in self.diffs for d in self._ranked(id) if path_matches(path_str(d.path), query)]
        return [self._row(d, path_str(d.path)) for d in hits[:limit]], len(hits)

    def leaf(self, id):
        return self._by_id.get(id)


class CallSource(RowSource[Leaf]):
    """Rows for intermediates: calls in execution order -> their output leaves.

    The section's "first non-finite" row is not a row here: the widget's jump button is it.
    """

    def __init__(self, insp: Inspection):
        self.head = S.intermediates(insp, S.HEAD)
        self.calls = insp.calls
        self.first = insp.first_nonfinite()
        self.labels = F.call_labels(insp.calls)

    def _row(self, call: MethodCall) -> Row:
        outputs, inputs = S.call_outputs(call), S.call_inputs(call)
        return lower(S.call_row(call, self.first, self.labels[call.order]), len(outputs) + len(inputs),
                     detail=True if inputs and not outputs else None)

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
        rows = [S.call_input_row(call, leaf) for leaf in S.call_inputs(call)]
        rows += [S.call_output_row(call, leaf) for leaf in S.call_outputs(call)]
        return [lower(row) for row in rows[offset:offset + limit]], len(rows)

    def search(self, query, limit=PAGE):
        hits = [c for c in self.calls if path_matches(f"{c.key} {c.module_type}", query)
                or path_matches(path_str(c.path), query)]
        return [self._row(c) for c in hits[:limit]], len(hits)

    def leaf(self, id):
        call = self._call(id)
        if call is None:
            return None
        if "/" not in id:
            return None if S.call_outputs(call) else call.outputs[0]
        if S.INPUT_ID in id:
            sub = id.split(S.INPUT_ID, 1)[1]
            return next((leaf for leaf in S.call_inputs(call) if path_str(leaf.path) == sub), None)
        sub = id.split("/", 1)[1]
        return next((leaf for leaf in call.outputs if path_str(call.output_path(leaf)) == sub), None)

    def label(self, id):
        call = self._call(id)
        if call is None:
            return id
        sub = id.split("/", 1)[1] if "/" in id else ""
        if S.INPUT_ID in id:
            sub = "input " + id.split(S.INPUT_ID, 1)[1]
        return call.key + (f" {sub}" if sub else "")


class CostSource(RowSource[Leaf]):
    """Rows for per-module cost (:func:`~inspector.views.sections.costs_section`): the rule, then the module
    tree, the root ``/`` first; ids are module paths (``/`` the root, ``:rule`` the rule). No row has a leaf."""

    def __init__(self, costs: Costs, order: S.CostOrder = "tree"):
        self.costs = costs
        self.head = S.costs_section(costs, S.HEAD, order)
        self.kids = S.cost_children(costs, order)
        self.by_id = {S.cost_id(m): m for m in costs.modules}

    def _row(self, m: ModuleCost, label: str | None = None) -> Row:
        row = S.cost_row(m, self.costs.flops, "" if m.path else self.costs.module_type)
        return lower(dataclasses.replace(row, name=label) if label else row, len(self.kids.get(m.path, [])),
                     detail=False)

    def children(self, id, offset=0, limit=PAGE):
        if not id:
            rows = [lower(S.costs_rule_row(self.costs))] + [self._row(m) for m in self.costs.modules[:1]]
            return rows[offset:offset + limit], len(rows)
        m = self.by_id.get(id)
        kids = self.kids.get(m.path, []) if m is not None else []
        return [self._row(k) for k in kids[offset:offset + limit]], len(kids)

    def toward(self, id, until):
        m = self.by_id.get(until)
        if m is None or not id:
            return "/" if m is not None and m.path and not id else until
        depth = len(self.by_id[id].path) if id in self.by_id else 0
        return S.cost_id(next((c for c in self.costs.modules if c.path == m.path[:depth + 1]), m))

    def search(self, query, limit=PAGE):
        hits = [m for m in self.costs.modules if m.path and path_matches(f"{path_str(m.path)} {m.module_type}", query)]
        return [self._row(m, path_str(m.path)) for m in hits[:limit]], len(hits)

    def leaf(self, id):
        return None

    def initial(self, open_depth: int = 2, budget: int = 100) -> list[Row]:
        """The rule and the root, open two levels deep."""
        return super().initial(open_depth, budget)


class GradSource(RowSource[Leaf]):
    """Rows for the gradients of a gradient inspection: ``update scales`` (rows ``scale:<key>``),
    ``activation gradients`` (a row ``g#<order>`` per call with gradients, a row ``g#<order>/<path>``
    per gradient below it) and ``parameter gradients`` (ids ``params/...``, as for variables).

    The section's "first non-finite gradient" row is not a row here: the widget's jump button is it.
    The scales are ranked, and the calls' norms measured, when their row is first opened.
    """

    GROUPS = ("update scales", "activation gradients", "parameter gradients")

    def __init__(self, insp: Inspection):
        if insp.grads is None:
            raise ValueError("no gradients: inspect with fi.inspect_grad")
        self.head = S.gradients(insp, S.HEAD)
        self.insp = insp
        self.root = insp.grads.root
        self.params = NodeSource(self.root)
        self.calls = {S.call_id(c): c for c in insp.calls if c.grads}

    @functools.cached_property
    def grad_norms(self) -> list[GradNorm]:
        """The calls' gradient norms, measured once (for the bars' axis and the calls' rows)."""
        return self.insp.grad_norms()

    @functools.cached_property
    def axis(self) -> S.LogAxis:
        """The one log axis of every bar of the tab (:func:`~inspector.views.sections.grad_axis`)."""
        return S.grad_axis(self.insp, self.grad_norms)

    def heading(self) -> str:
        """The section's title line, with the range of the bars' common log axis."""
        return safe(f"{super().heading()}, bars: {self.axis.describe('|grad|')}")

    @functools.cached_property
    def _scales(self) -> list[Row]:
        return [lower(S.scale_row(u, self.axis)) for u in self.insp.update_scales()]

    @functools.cached_property
    def _norms(self) -> list[Row]:
        norms = self.grad_norms
        labels = F.call_labels(self.insp.calls)
        return [lower(S.grad_row(n, self.calls[f"#{n.order}"], self.axis, labels[n.order]),
                      len(self.calls[f"#{n.order}"].grads or ())) for n in norms]

    def _groups(self) -> list[Row]:
        return [lower(S.update_scales_row(self.insp), self.root.count),
                lower(S.activation_grads_row(self.insp), len(self.calls)),
                lower(S.param_grads_row(self.root), len(self.root.children))]

    def _call(self, id: str) -> MethodCall | None:
        return self.calls.get(id[1:].split("/", 1)[0]) if id.startswith("g#") else None

    def children(self, id, offset=0, limit=PAGE):
        if not id:
            rows = self._groups()
            return rows[offset:offset + limit], len(rows)
        if id == "update scales":
            return self._scales[offset:offset + limit], len(self._scales)
        if id == "activation gradients":
            return self._norms[offset:offset + limit], len(self._norms)
        if id == "parameter gradients":
            return self.params.children("", offset, limit)
        call = self._call(id)
        if call is not None:
            grads = (call.grads or []) if "/" not in id else []
            return [lower(S.grad_leaf_row(call, g)) for g in grads[offset:offset + limit]], len(grads)
        return self.params.children(id, offset, limit) if self._is_param(id) else ([], 0)

    def _is_param(self, id: str) -> bool:
        return id not in self.GROUPS and not id.startswith(("g#", "scale:"))

    def toward(self, id, until):
        if not id:
            if until.startswith("scale:"):
                return "update scales"
            if until.startswith("g#"):
                return "activation gradients"
            return until if until in self.GROUPS else "parameter gradients"
        if id == "activation gradients":
            return until.split("/", 1)[0]
        if id == "parameter gradients" or self._is_param(id):
            depth = len(parse_path(id)) if self._is_param(id) else 0
            return path_str(parse_path(until)[:depth + 1]) if self._is_param(until) else until
        return until

    def search(self, query, limit=PAGE):
        """Calls by key or module type, then parameter gradients by path."""
        hits = [r for r in self._norms if path_matches(f"{self.calls[r['id'][1:]].key} "
                                                        f"{self.calls[r['id'][1:]].module_type}", query)]
        rows, total = self.params.search(query, limit)
        return (hits + rows)[:limit], len(hits) + total

    def leaf(self, id):
        call = self._call(id)
        if call is None:
            return self.params.leaf(id) if self._is_param(id) else None
        grads = call.grads or []
        if "/" not in id:
            return grads[0] if len(grads) == 1 else None
        return next((g for g in grads if S.grad_leaf_row(call, g).id == id), None)

    def initial(self, open_depth: int = 1, budget: int = 100) -> list[Row]:
        """The groups, with the first page of the calls' gradient norms (the vanishing or exploding
        picture) open; the scales and the parameter gradients open when asked for."""
        rows, _ = self.children("")
        calls = rows[1]
        kids, total = self.children(calls["id"], 0, budget)
        calls["children"] = kids + self.more_row(calls["id"], len(kids), total)
        return rows

    def label(self, id):
        call = self._call(id)
        if call is None:
            return id
        sub = id.split("/", 1)[1] if "/" in id else ""
        return f"d loss / d {call.key}" + (f" {sub}" if sub and sub != "grad" else "")


class BindingSource(RowSource[Leaf]):
    """Rows for the binding trace: calls nested as they ran, with what each touched."""

    def __init__(self, insp: Inspection):
        self.head = S.binding_trace(insp, S.HEAD)
        self.calls = insp.binding
        self.kids = S.binding_children(insp.binding)

    def children(self, id, offset=0, limit=PAGE):
        kids = self.kids.get(int(id[1:]) if id else None, [])
        rows = [lower(S.binding_row(c), len(self.kids.get(c.order, ()))) for c in kids[offset:offset + limit]]
        return rows, len(kids)

    def search(self, query, limit=PAGE):
        hits = [c for c in self.calls if path_matches(f"{c.key} {c.module_type} {F.binding(c)}", query)]
        rows = [lower(dataclasses.replace(S.binding_row(c), name=f"#{c.order} {c.key}")) for c in hits[:limit]]
        return rows, len(hits)

    def leaf(self, id):
        return None

    def initial(self, open_depth: int = 4, budget: int = 100) -> list[Row]:
        """The timeline opens deeper than trees do: nesting is the point of it."""
        return super().initial(open_depth, budget)


class ComparisonSource(RowSource[LeafDelta]):
    """Rows for a comparison: a row per section (its title line), then its differing leaves in
    execution order (``order='size'``: largest first) with the first divergence marked, then a folded
    row of its equal leaves (id :func:`~inspector.views.sections.equal_id`) that opens on request."""

    def __init__(self, comparison: Comparison, order: Order = "execution"):
        self.comparison = comparison
        self.order = order
        self.first = comparison.first_divergence()
        self.heads = {key: S.compared(comparison, key, S.HEAD, order, self.first) for key in S.COMPARED}
        ordered = {key: comparison.ordered(key, order) for key in S.COMPARED}
        self.differ: dict[str, list[LeafDelta]] = {k: [d for d in items if not d.equal] for k, items in ordered.items()}
        self.equal: dict[str, list[LeafDelta]] = {k: [d for d in items if d.equal] for k, items in ordered.items()}
        self.by_id = {f"{d.section}:{d.key}": d for d in comparison.deltas}

    def heading(self) -> str:
        """The comparison's header line: who is compared, and where they first differ."""
        return safe(F.comparison_header(self.comparison))

    def _row(self, d: LeafDelta) -> Row:
        return lower(S.delta_row(d, d is self.first), detail=True)  # a click shows both arrays and their Δ

    def _rows(self, key: str) -> list[Row | LeafDelta]:
        equal = self.equal.get(key, [])
        out: list[Row | LeafDelta] = list(self.differ.get(key, []))
        if equal:
            out.append(lower(S.equal_row(key, equal), len(equal)))
        return out

    def children(self, id, offset=0, limit=PAGE):
        if not id:
            rows = [lower(S.Row(s.title, s.summary, nonfinite=s.nonfinite, id=key), len(self._rows(key)))
                    for key, s in self.heads.items() if not s.empty]
            return rows[offset:offset + limit], len(rows)
        for key in S.COMPARED:
            if id == S.equal_id(key):
                equal = self.equal[key]
                return [self._row(d) for d in equal[offset:offset + limit]], len(equal)
        items = self._rows(id)
        return [r if isinstance(r, dict) else self._row(r) for r in items[offset:offset + limit]], len(items)

    def toward(self, id, until):
        if id in self.heads and until in self.by_id and self.by_id[until].equal:
            return S.equal_id(id)
        return until

    def search(self, query, limit=PAGE):
        hits = [d for key in S.COMPARED for d in self.differ[key] + self.equal[key] if path_matches(d.key, query)]
        return [self._row(d) for d in hits[:limit]], len(hits)

    def leaf(self, id: str) -> LeafDelta | None:
        return self.by_id.get(id)
