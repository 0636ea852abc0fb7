"""The one view-model: a document of sections of rows, and each row's line of text.

What a view shows (which sections, in which order, each row's name, summary and
flags, what a limit leaves out) is decided once, by the section builders
(:mod:`~inspector.views.document` and the ``*_section(s).py`` modules), as these
passive dataclasses. Text, rich and static HTML are lowerings of this tree that decide
only how it looks, so the text golden files constrain every view (``tests/test_views.py``
checks that each text line appears in the others); the widget's rows
(:mod:`~inspector.views.row_source`) are lowered from the same rows. Strings here are raw:
each lowering escapes them for its medium.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal, TypeVar

from inspector.model import Leaf
from inspector.views import format as F
from inspector.views.depth import DepthPoint


RowStatus = Literal["", "changed", "added", "unchanged", "removed"]
"""How a row's leaf changed (a mutation's or a comparison's); ``''`` for a row that is not a change."""

FIRST_MARK = "<- first non-finite"
"""Follows the row of the first captured call whose output has a NaN or Inf, in every view."""

DIVERGENCE_MARK = "<- first divergence"
"""Follows the row of a comparison's first divergence (:meth:`~inspector.model.Comparison.first_divergence`)."""

BAR = 12
"""Width, in characters, of a bar in text (``[#####.......]``): the position of a value on a log axis."""


@dataclasses.dataclass
class Row:
    """One line of a view, ``name (kind): summary``, and the rows below it.

    Attributes:
        name: what the row is: a variable's name, ``#3 encoder:__call__[0]``, a key.
        summary: what it holds (shape and statistics, a delta, what a call touched); may be empty.
        kind: the class behind it, shown in parentheses after the name (``Dense``, ``sow``); may be empty.
        children: the rows below, in order.
        more: how many rows below were left out by a limit (shown as ``... N more``).
        nonfinite: a NaN or Inf at or below this row.
        first: the row of the first captured call whose output has a NaN or Inf.
        status: how a mutated or compared leaf changed (``''`` when the row is not a change).
        id: an address unique within its section: a key-grammar path (variables, output, mutations),
            ``#<order>`` for a call and ``#<order>/<path>`` for one of its outputs, ``b<order>``
            for a binding call, ``<section>:<key>`` for a comparison; in ``gradients``, ``g#<order>`` for
            a call's gradient and ``g#<order>/<path>`` for one of its leaves (``/grad`` for an array's),
            ``scale:<key>`` for an update scale, key-grammar paths for parameter gradients; ``''`` for none.
        link: the ``id`` of the row this one points to, or ``''``.
        leaf: the array behind the row (histograms, previews), or None.
        fact: the row's key fact, said before its summary and never cut off (``!! 255 nan``,
            ``3/8 changed (1 to nan)``); may be empty.
        mark: a mark after the row (:data:`DIVERGENCE_MARK`); the first non-finite call's is ``first``'s.
        folded: the rows below are shown only on request (equal leaves of a comparison): text and rich
            show this row's line alone, folding views show them closed.
        bar: the position, in [0, 1], of the row's value on its section's common log axis (:class:`LogAxis`);
            None where the value is not positive and finite. Only where ``bar_title`` is set.
        bar_title: what the bar shows, with the exact value (hover text); ``''`` for a row without a bar.
    """

    name: str
    summary: str = ""
    kind: str = ""
    children: list[Row] = dataclasses.field(default_factory=list)
    more: int = 0
    nonfinite: bool = False
    first: bool = False
    status: RowStatus = ""
    id: str = ""
    link: str = ""
    leaf: Leaf | None = dataclasses.field(default=None, repr=False)
    fact: str = ""
    mark: str = ""
    folded: bool = False
    bar: float | None = None
    bar_title: str = ""


@dataclasses.dataclass
class Section:
    """One part of a document: a title line (``title: summary``) and its rows.

    Attributes:
        key: the same in every view: ``output``, ``variables``, ``mutations``, ``intermediates``,
            ``gradients`` (a gradient inspection only), ``binding`` (or a comparison's ``output``,
            ``variables``, ``intermediates``, and ``gradients`` when either side has them).
        title: the head of the title line (``mutated`` for ``mutations``).
        summary: the rest of the title line; may be empty.
        rows, more, nonfinite: as for :class:`Row`.
        empty: what a view that always shows this section says instead, when there is nothing
            to show (``''`` when there is); text and rich leave such a section out.
        open_depth: how many levels of rows a folding view shows open at first.
        depth: the intermediates' activation statistics by depth, for views that draw them
            (static HTML, the widget); every call, whatever the limits.
    """

    key: str
    title: str
    summary: str = ""
    rows: list[Row] = dataclasses.field(default_factory=list)
    more: int = 0
    nonfinite: bool = False
    empty: str = ""
    open_depth: int = 1
    depth: list[DepthPoint] = dataclasses.field(default_factory=list, repr=False)


@dataclasses.dataclass
class Document:
    """What a view shows: a header line, the sections, and the notes (what flax dropped)."""

    header: str
    sections: list[Section]
    notes: list[str] = dataclasses.field(default_factory=list)
    origin: str = ""
    """The line after the header about the first NaN/Inf's operation
    (:func:`~inspector.views.document.origin_line`); ``''`` for none."""

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


@dataclasses.dataclass(frozen=True)
class Limits:
    """How much a view lists: ``max_children`` rows per level (and per section), ``max_depth``
    levels below a section; None for all. What is left out is counted in ``more``."""

    max_children: int | None = None
    max_depth: int | None = None


HEAD = Limits(max_depth=0)
"""No rows: a section's title line, flags and counts only (what a lazy view shows before it is opened)."""

NO_LIMITS = Limits()
"""No limits: every row (what the section builders list by default)."""

TAB_ORDER = ("variables", "mutations", "intermediates", "costs", "gradients", "binding", "output")
"""The order of the sections as tabs, in the widget and the static page alike (the text views list
them in the document's order, output first)."""

T = TypeVar("T")


def limited(items: Sequence[T], level: int, limits: Limits) -> tuple[Sequence[T], int]:
    """The items listed at ``level`` (1 directly under a section), and how many are left out."""
    if limits.max_depth is not None and level > limits.max_depth:
        return (), len(items)
    shown = items if limits.max_children is None else items[:limits.max_children]
    return shown, len(items) - len(shown)


@dataclasses.dataclass(frozen=True)
class LogAxis:
    """One log10 axis for every bar of a section: from ``10**lo`` (an empty bar) to ``10**hi`` (a full
    one), whole decades spanning the values it was made for (:meth:`of`)."""

    lo: int
    hi: int

    @classmethod
    def of(cls, values: Sequence[float]) -> LogAxis:
        """The whole decades around the positive finite ``values`` (one decade when they all lie in one,
        ``1e-1..1e0`` when there is none)."""
        logs = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
        if not logs:
            return cls(-1, 0)
        lo, hi = math.floor(min(logs)), math.ceil(max(logs))
        return cls(lo, hi if hi > lo else lo + 1)

    def position(self, value: float) -> float | None:
        """Where ``value`` lies on the axis, in [0, 1] (clipped); None unless it is positive and finite."""
        if not (value > 0 and math.isfinite(value)):
            return None
        return min(1.0, max(0.0, (math.log10(value) - self.lo) / (self.hi - self.lo)))

    def describe(self, what: str) -> str:
        """``|g| on a log axis 1e-08..1e+02``."""
        return f"{what} on a log axis 1e{self.lo:+03d}..1e{self.hi:+03d}"

    def place(self, row: Row, value: float, what: str) -> Row:
        """``row`` with the bar of ``value`` and its hover text (``|grad| 0.001234``: the exact value)."""
        row.bar = self.position(value)
        row.bar_title = f"{what} {value!r}" if isinstance(value, float) else f"{what} {value}"
        return row


def bar_text(row: Row) -> str:
    """A row's bar in text, a fixed-width column: ``[#####.......]`` (``[    n/a     ]`` without a value)."""
    if row.bar is None:
        return "[" + "n/a".center(BAR) + "]"
    filled = round(BAR * row.bar)
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def line(row: Row) -> str:
    """A row as one line of text: ``[bar] name (kind): fact, summary``, marked when it is the first
    non-finite call (or carries a :attr:`Row.mark`). A bar (:func:`bar_text`) comes first, so that the bars
    of sibling rows line up in a column."""
    text = row.name + (f" ({row.kind})" if row.kind else "")
    said = F.with_fact(row.fact, row.summary)
    text += f": {said}" if said else ""
    if row.bar_title:
        text = f"{bar_text(row)} {text}"
    mark = row.mark or (FIRST_MARK if row.first else "")
    return text + (f" {mark}" if mark else "")


def title_line(section: Section) -> str:
    """A section's title line: ``title: summary`` (``title:`` without a summary)."""
    return f"{section.title}:" + (f" {section.summary}" if section.summary else "")


def more_line(count: int) -> str:
    return f"... {count} more"
