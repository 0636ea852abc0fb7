"""The row sources of the tabs every inspection has: Output, Variables, Mutations, Intermediates and
Binding (see :class:`~inspector.views.row_source.RowSource`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

from inspector.model import Inspection, Leaf, LeafDiff, MethodCall, Node, path_matches, path_str
from inspector.names import parse_path
from inspector.views import format as F
from inspector.views.inspection_sections import (
    INPUT_ID, binding_children, binding_row, binding_trace, call_input_row, call_inputs, call_output_row,
    call_outputs, call_row, change_row, collection_row, intermediates, mutations, output, output_row, variable_row,
    variables,
)
from inspector.views.row_source import PAGE, RowSource, WireRow, lower
from inspector.views.viewmodel import HEAD, Section


class OutputSource(RowSource[Leaf]):
    """Rows for what the call returned: its array leaves in order (none for ``init``).

    Ids are the keys ``Inspection[...]`` takes: ``'output'`` or ``'output/<path>'``. A
    returned array is one row, ``output``, whose line is the section's title line.
    """

    def __init__(self, insp: Inspection):
        self.head = output(insp, HEAD)
        self.leaves = {path_str(("output",) + leaf.path): leaf for leaf in insp.outputs} if insp.kind != "init" else {}

    def heading(self) -> str:
        return "" if list(self.leaves) == ["output"] else super().heading()

    def _row(self, id: str) -> WireRow:
        return lower(output_row(self.leaves[id]))

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        ids = list(self.leaves) if not id else []
        return [self._row(i) for i in ids[offset:offset + limit]], len(ids)

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        hits = [i for i in self.leaves if path_matches(i, query)]
        return [self._row(i) for i in hits[:limit]], len(hits)

    def leaf(self, id: str) -> Leaf | None:
        return self.leaves.get(id)


class NodeSource(RowSource[Leaf]):
    """Rows for a :class:`Node` tree (variables); ids are node paths. ``head``: see :class:`RowSource`."""

    def __init__(self, root: Node, head: Section | None = None):
        self.root = root
        self.head = head

    @classmethod
    def variables(cls, insp: Inspection) -> NodeSource:
        """The variables of ``insp``, under their section's title line."""
        return cls(insp.variables.root, variables(insp, HEAD))

    def _node(self, id: str) -> Node | None:
        return self.root.find(parse_path(id)) if id else self.root

    def _row(self, node: Node, label: str | None = None) -> WireRow:
        row = variable_row(node)
        return lower(dataclasses.replace(row, name=label) if label else row, len(node.children))

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        node = self._node(id)
        if node is None:
            return [], 0
        kids = list(node.children.values())
        return [self._row(c) for c in kids[offset:offset + limit]], len(kids)

    def _walk(self, node: Node) -> Iterator[Node]:
        for child in node.children.values():
            yield child
            yield from self._walk(child)

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        rows: list[WireRow] = []
        total = 0
        for node in self._walk(self.root):
            if path_matches(path_str(node.path), query):
                total += 1
                if len(rows) < limit:
                    rows.append(self._row(node, path_str(node.path)))
        return rows, total

    def leaf(self, id: str) -> Leaf | None:
        node = self._node(id)
        return node.leaf if node is not None else None


class DiffSource(RowSource[LeafDiff]):
    """Rows for mutated collections: collection -> leaves, most changed first."""

    def __init__(self, insp: Inspection):
        self.head = mutations(insp, HEAD)
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

    def _row(self, d: LeafDiff, label: str | None = None) -> WireRow:
        row = change_row(d)
        return lower(dataclasses.replace(row, name=label) if label else row)

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        if not id:
            diffs = list(self.diffs.values())[offset:offset + limit]
            return [lower(collection_row(diff), len(diff.leaves)) for diff in diffs], len(self.diffs)
        ranked = self._ranked(id)
        return [self._row(d) for d in ranked[offset:offset + limit]], len(ranked)

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        hits = [d for id in self.diffs for d in self._ranked(id) if path_matches(path_str(d.path), query)]
        return [self._row(d, path_str(d.path)) for d in hits[:limit]], len(hits)

    def leaf(self, id: str) -> LeafDiff | None:
        return self._by_id.get(id)


class CallSource(RowSource[Leaf]):
    """Rows for intermediates: calls in execution order -> their output leaves.

    The section's "first non-finite" row is not a row here: the widget's jump button is it.
    """

    def __init__(self, insp: Inspection):
        self.head = intermediates(insp, HEAD)
        self.calls = insp.calls
        self.first = insp.first_nonfinite()
        self.labels = F.call_labels(insp.calls)

    def _row(self, call: MethodCall) -> WireRow:
        outputs, inputs = call_outputs(call), call_inputs(call)
        return lower(call_row(call, self.first, self.labels[call.order]), len(outputs) + len(inputs),
                     detail=True if inputs and not outputs else None)

    def _call(self, id: str) -> MethodCall | None:
        try:
            order = int(id.split("/", 1)[0].lstrip("#"))
        except ValueError:
            return None
        return self.calls[order] if 0 <= order < len(self.calls) else None

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        if not id:
            return [self._row(c) for c in self.calls[offset:offset + limit]], len(self.calls)
        call = self._call(id)
        if call is None:
            return [], 0
        rows = [call_input_row(call, leaf) for leaf in call_inputs(call)]
        rows += [call_output_row(call, leaf) for leaf in call_outputs(call)]
        return [lower(row) for row in rows[offset:offset + limit]], len(rows)

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        hits = [c for c in self.calls if path_matches(f"{c.key} {c.module_type}", query)
                or path_matches(path_str(c.path), query)]
        return [self._row(c) for c in hits[:limit]], len(hits)

    def leaf(self, id: str) -> Leaf | None:
        call = self._call(id)
        if call is None:
            return None
        if "/" not in id:
            return None if call_outputs(call) else call.outputs[0]
        if INPUT_ID in id:
            sub = id.split(INPUT_ID, 1)[1]
            return next((leaf for leaf in call_inputs(call) if path_str(leaf.path) == sub), None)
        sub = id.split("/", 1)[1]
        return next((leaf for leaf in call.outputs if path_str(call.output_path(leaf)) == sub), None)

    def label(self, id: str) -> str:
        call = self._call(id)
        if call is None:
            return id
        sub = id.split("/", 1)[1] if "/" in id else ""
        if INPUT_ID in id:
            sub = "input " + id.split(INPUT_ID, 1)[1]
        return call.key + (f" {sub}" if sub else "")


class BindingSource(RowSource[Leaf]):
    """Rows for the binding trace: calls nested as they ran, with what each touched."""

    def __init__(self, insp: Inspection):
        self.head = binding_trace(insp, HEAD)
        self.calls = insp.binding
        self.kids = binding_children(insp.binding)

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
        kids = self.kids.get(int(id[1:]) if id else None, [])
        rows = [lower(binding_row(c), len(self.kids.get(c.order, ()))) for c in kids[offset:offset + limit]]
        return rows, len(kids)

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        hits = [c for c in self.calls if path_matches(f"{c.key} {c.module_type} {F.binding(c)}", query)]
        rows = [lower(dataclasses.replace(binding_row(c), name=f"#{c.order} {c.key}")) for c in hits[:limit]]
        return rows, len(hits)

    def leaf(self, id: str) -> Leaf | None:
        return None

    def initial(self, open_depth: int = 4, budget: int = 100) -> list[WireRow]:
        """The timeline opens deeper than trees do: nesting is the point of it."""
        return super().initial(open_depth, budget)
