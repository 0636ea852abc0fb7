"""The sections of a comparison (two inspections' leaves aligned): its differing leaves, the first
divergence marked, and a folded row of the equal ones."""

from __future__ import annotations

from collections.abc import Sequence

from inspector.model import ComparedSection, Comparison, LeafDelta, Order
from inspector.views import format as F
from inspector.views.viewmodel import DIVERGENCE_MARK, HEAD, NO_LIMITS, Document, Limits, Row, Section, limited


def _either_nonfinite(d: LeafDelta) -> bool:
    return bool((d.a and d.a.nonfinite) or (d.b and d.b.nonfinite))


def delta_row(d: LeafDelta, first: bool = False) -> Row:
    """A leaf of a comparison: how far ``b`` is from ``a``, the changed count first (``first``: the
    comparison's first divergence, marked)."""
    fact, summary = F.delta_parts(d)
    return Row(d.key, summary, nonfinite=_either_nonfinite(d), status="" if d.equal else "changed",
               id=f"{d.section}:{d.key}", fact=fact, mark=DIVERGENCE_MARK if first else "")


def equal_id(section: str) -> str:
    """The id of a comparison section's row of equal leaves."""
    return f"{section}\x00equal"


def equal_row(section: str, equal: Sequence[LeafDelta], limits: Limits = HEAD) -> Row:
    """One line for a section's equal leaves, ``16 equal leaves``, folded: the leaves below it are shown
    on request (text and rich show the line alone)."""
    shown, more = limited(equal, 2, limits)
    return Row(F.plural(len(equal), "equal leaf", "equal leaves"), id=equal_id(section), folded=True,
               children=[delta_row(d) for d in shown], more=more)


COMPARED: tuple[ComparedSection, ...] = ("output", "variables", "intermediates")
"""The sections of a comparison, in order."""


def compared(comparison: Comparison, key: ComparedSection, limits: Limits = NO_LIMITS, order: Order = "execution",
             first: LeafDelta | None = None) -> Section:
    """One section of a comparison: its differing leaves in ``order`` (``'execution'``, or ``'size'``:
    largest first), the first divergence (``first``, by default :meth:`~inspector.model.Comparison.first_divergence`)
    marked and always listed, then one folded row counting the equal leaves."""
    items = comparison.ordered(key, order)
    if not items:
        return Section(key, key, empty="nothing to compare")
    if first is None:
        first = comparison.first_divergence()
    differ = [d for d in items if not d.equal]
    equal = [d for d in items if d.equal]
    shown, more = limited(differ, 1, limits)
    listed = list(shown)
    if (first is not None and limits.max_depth != 0 and any(d is first for d in differ)
            and all(d is not first for d in listed)):
        listed.append(first)  # what the header names is always there
        more -= 1
    rows = [delta_row(d, d is first) for d in listed]
    if equal and (limits.max_depth is None or limits.max_depth >= 1):
        rows.append(equal_row(key, equal, limits))
    how = "in execution order" if order == "execution" else "largest first"
    return Section(key, key, f"{len(differ)} of {len(items)} differ, {how}", rows, more,
                   any(_either_nonfinite(d) for d in items))


def comparison_document(comparison: Comparison, limits: Limits, order: Order = "execution") -> Document:
    keys = COMPARED + (("gradients",) if comparison.a.grads is not None or comparison.b.grads is not None else ())
    first = comparison.first_divergence()
    return Document(F.comparison_header(comparison), [compared(comparison, key, limits, order, first) for key in keys])
