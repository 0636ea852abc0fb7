"""The rows of the Gradients tab of a gradient inspection (see
:class:`~inspector.views.row_source.RowSource`)."""

from __future__ import annotations

import functools

from inspector.model import GradNorm, Inspection, Leaf, MethodCall, path_matches, path_str
from inspector.names import parse_path, safe
from inspector.views import format as F
from inspector.views.gradient_section import (
    activation_grads_row, grad_axis, grad_leaf_row, grad_row, gradients, param_grads_row, scale_row,
    update_scales_row,
)
from inspector.views.inspection_sections import call_id
from inspector.views.inspection_sources import NodeSource
from inspector.views.row_source import PAGE, RowSource, WireRow, lower
from inspector.views.viewmodel import HEAD, LogAxis


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
        self.head = gradients(insp, HEAD)
        self.insp = insp
        self.root = insp.grads.root
        self.params = NodeSource(self.root)
        self.calls = {call_id(c): c for c in insp.calls if c.grads}

    @functools.cached_property
    def grad_norms(self) -> list[GradNorm]:
        """The calls' gradient norms, measured once (for the bars' axis and the calls' rows)."""
        return self.insp.grad_norms()

    @functools.cached_property
    def axis(self) -> LogAxis:
        """The one log axis of every bar of the tab (:func:`~inspector.views.gradient_section.grad_axis`)."""
        return grad_axis(self.insp, self.grad_norms)

    def heading(self) -> str:
        """The section's title line, with the range of the bars' common log axis."""
        return safe(f"{super().heading()}, bars: {self.axis.describe('|grad|')}")

    @functools.cached_property
    def _scales(self) -> list[WireRow]:
        return [lower(scale_row(u, self.axis)) for u in self.insp.update_scales()]

    @functools.cached_property
    def _norms(self) -> list[WireRow]:
        norms = self.grad_norms
        labels = F.call_labels(self.insp.calls)
        return [lower(grad_row(n, self.calls[f"#{n.order}"], self.axis, labels[n.order]),
                      len(self.calls[f"#{n.order}"].grads or ())) for n in norms]

    def _groups(self) -> list[WireRow]:
        return [lower(update_scales_row(self.insp), self.root.count),
                lower(activation_grads_row(self.insp), len(self.calls)),
                lower(param_grads_row(self.root), len(self.root.children))]

    def _call(self, id: str) -> MethodCall | None:
        return self.calls.get(id[1:].split("/", 1)[0]) if id.startswith("g#") else None

    def children(self, id: str, offset: int = 0, limit: int = PAGE) -> tuple[list[WireRow], int]:
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
            return [lower(grad_leaf_row(call, g)) for g in grads[offset:offset + limit]], len(grads)
        return self.params.children(id, offset, limit) if self._is_param(id) else ([], 0)

    def _is_param(self, id: str) -> bool:
        return id not in self.GROUPS and not id.startswith(("g#", "scale:"))

    def toward(self, id: str, until: str) -> str:
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

    def search(self, query: str, limit: int = PAGE) -> tuple[list[WireRow], int]:
        """Calls by key or module type, then parameter gradients by path."""
        hits = [r for r in self._norms if path_matches(f"{self.calls[r['id'][1:]].key} "
                                                        f"{self.calls[r['id'][1:]].module_type}", query)]
        rows, total = self.params.search(query, limit)
        return (hits + rows)[:limit], len(hits) + total

    def leaf(self, id: str) -> Leaf | None:
        call = self._call(id)
        if call is None:
            return self.params.leaf(id) if self._is_param(id) else None
        grads = call.grads or []
        if "/" not in id:
            return grads[0] if len(grads) == 1 else None
        return next((g for g in grads if grad_leaf_row(call, g).id == id), None)

    def initial(self, open_depth: int = 1, budget: int = 100) -> list[WireRow]:
        """The groups, with the first page of the calls' gradient norms (the vanishing or exploding
        picture) open; the scales and the parameter gradients open when asked for."""
        rows, _ = self.children("")
        calls = rows[1]
        kids, total = self.children(calls["id"], 0, budget)
        calls["children"] = kids + self.more_row(calls["id"], len(kids), total)
        return rows

    def label(self, id: str) -> str:
        call = self._call(id)
        if call is None:
            return id
        sub = id.split("/", 1)[1] if "/" in id else ""
        return f"d loss / d {call.key}" + (f" {sub}" if sub and sub != "grad" else "")
