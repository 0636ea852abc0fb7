"""An inspection or a comparison as its view-model :class:`~inspector.views.viewmodel.Document`: which
sections, in which order, under which header (and the line about the first NaN's operation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inspector.model import Comparison, Inspection, Order
from inspector.views import format as F
from inspector.views.comparison_sections import comparison_document
from inspector.views.cost_section import CostOrder, costs_section, inspection_costs
from inspector.views.gradient_section import gradients
from inspector.views.inspection_sections import binding_trace, intermediates, mutations, output, variables
from inspector.views.viewmodel import Document, Limits, Section

if TYPE_CHECKING:
    from inspector.origin import Origin


def document(obj: Inspection | Comparison, *, max_children: int | None = None, max_depth: int | None = None,
             timings: bool = True, binding: bool = True, order: Order = "execution", costs: bool | None = None,
             costs_order: CostOrder = "tree") -> Document:
    """The view-model of an inspection (``timings`` in the header, the ``binding`` section; the ``costs``
    section: None (the default) when ``insp.costs()`` was already computed, True to compute it, False never;
    its modules in ``costs_order``, see :func:`~inspector.views.cost_section.costs_section`) or of a comparison
    (its leaves in ``order``: ``'execution'`` or ``'size'``); see :class:`~inspector.views.viewmodel.Limits` for
    ``max_children`` and ``max_depth``."""
    limits = Limits(max_children, max_depth)
    if isinstance(obj, Comparison):
        return comparison_document(obj, limits, order)
    parts = [output(obj), variables(obj, limits), mutations(obj, limits), intermediates(obj, limits)]
    cost = inspection_costs(obj, costs)
    if cost is not None:
        parts.append(cost if isinstance(cost, Section) else costs_section(cost, limits, costs_order))
    if obj.grads is not None:
        parts.append(gradients(obj, limits))
    if binding:
        parts.append(binding_trace(obj, limits))
    return Document(F.header(obj, timings), parts, list(obj.notes), origin_line(obj))


def sections(obj: Inspection | Comparison, *, max_children: int | None = None,
             max_depth: int | None = None) -> list[Section]:
    """The sections of :func:`document` (every one, empty ones included)."""
    return document(obj, max_children=max_children, max_depth=max_depth).sections


# -- the first NaN's operation (inspector.origin) ------------------------------------

ORIGIN_HINT = "call insp.nonfinite_origin() to find the operation"
"""What a view without a kernel says where the origin of a NaN can be asked but was not computed."""


def origin_words(origin: Origin) -> str:
    """One line naming where the first NaN/Inf was born: ``first NaN born at `log` in model.py:42
    (Net/Block_0.__call__)``; an input that held it, or why it is unknown."""
    if origin.kind == "op":
        nan, pos, neg = (sum(getattr(r, k) for r in origin.results) for k in ("nan", "posinf", "neginf"))
        what = "NaN" if nan or not (pos or neg) else "-Inf" if not pos else "+Inf" if not neg else "Inf"
        where = f" in {origin.where}" if origin.where else ""
        method = origin.function.rsplit(".", 1)[-1] if origin.function else ""
        scope = origin.name_stack + (f".{method}" if origin.name_stack and method else "")
        return f"first {what} born at `{origin.primitive}`{where}" + (f" ({scope})" if scope else "")
    if origin.kind == "input":
        return f"first NaN/Inf: already in input {origin.input_name}"
    return f"first NaN/Inf: operation unknown ({origin.reason})"


def origin_line(insp: Inspection) -> str:
    """The header's second line where the inspection holds a NaN/Inf: :func:`origin_words` when the origin
    was computed, else :data:`ORIGIN_HINT` where it can be asked (never computes it); ``''`` otherwise."""
    from inspector import origin as O

    done = O.computed(insp)
    if done is not None:
        return origin_words(done)
    return f"first NaN/Inf: {ORIGIN_HINT}" if O.available(insp) else ""
