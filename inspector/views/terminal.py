"""A rich tree for terminals: the lowering of :mod:`~inspector.views.viewmodel` to rich,
with non-finite values in red.

Every piece of text goes through :func:`~inspector.names.safe`, so control and bidi
characters are escaped: only rich's own styling reaches the terminal raw.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group
from rich.text import Text
from rich.tree import Tree

from inspector.model import Comparison, Inspection, Order
from inspector.names import safe
from inspector.views.cost_section import CostOrder
from inspector.views.document import document
from inspector.views.viewmodel import Document, Row, Section, bar_text, line, more_line

STYLES = {
    "header": "bold cyan", "name": "bold", "nonfinite": "red", "alert": "bold red", "more": "dim",
    "note": "yellow", "changed": "yellow", "added": "green", "removed": "red", "unchanged": "dim", "bar": "cyan",
}
"""Semantic names -> rich styles: every style the view uses, in one place."""


def _label(row: Row) -> Text:
    if row.first or row.link:  # the first non-finite call, and the line that names it
        return Text(safe(line(row)), style=STYLES["alert"])
    text = Text()
    if row.bar_title:  # first, a fixed width: the bars of sibling rows line up
        text.append(bar_text(row) + " ", style=STYLES["bar"])
    text.append(safe(row.name), style=STYLES["name"])
    if row.kind:
        text.append(f" ({safe(row.kind)})")
    if row.fact or row.summary:
        text.append(": ")
    if row.fact:
        text.append(safe(row.fact), style=STYLES["alert"] if row.nonfinite else STYLES["name"])
        if row.summary:
            text.append("; ")
    if row.summary:
        text.append(safe(row.summary), style=STYLES["nonfinite"] if row.nonfinite else "")
    if row.status:
        text.stylize(STYLES[row.status])
    if row.mark:
        text.append(f" {safe(row.mark)}", style=STYLES["alert"])
    return text


def _add(tree: Tree, rows: Sequence[Row], more: int) -> None:
    for row in rows:
        node = tree.add(_label(row))
        if not row.folded:  # folded rows (a comparison's equal leaves) are one line here, as in text
            _add(node, row.children, row.more)
    if more:
        tree.add(Text(more_line(more), style=STYLES["more"]))


def _section(section: Section) -> Tree:
    label = Text.assemble((safe(section.title), STYLES["name"]), ":")
    if section.summary:
        label.append(" ")
        label.append(safe(section.summary), style=STYLES["nonfinite"] if section.nonfinite else "")
    tree = Tree(label)
    _add(tree, section.rows, section.more)
    return tree


def lower(doc: Document) -> Group:
    """The header, a tree per section that has something to show, then the notes."""
    parts: list = [Text(safe(doc.header), style=STYLES["header"])]
    if doc.origin:
        parts.append(Text(safe(doc.origin), style=STYLES["alert"]))
    parts += [_section(s) for s in doc.sections if not s.empty]
    parts += [Text(safe(f"note: {note}"), style=STYLES["note"]) for note in doc.notes]
    return Group(*parts)


def render_rich(obj: Inspection | Comparison, max_depth: int = 4, max_children: int = 50,
                order: Order = "execution", costs: bool | None = None, costs_order: CostOrder = "tree") -> Group:
    """Renderable for ``rich.print``: every section of the text view, and its notes (a comparison's
    leaves in ``order``, ``'execution'`` or ``'size'``; ``costs``/``costs_order`` as for the text view)."""
    return lower(document(obj, max_children=max_children, max_depth=max_depth, order=order, costs=costs,
                          costs_order=costs_order))


def print_inspection(insp: Inspection, console: Console | None = None, **kwargs) -> None:
    """Prints the rich tree to ``console`` (a new one by default)."""
    (console or Console()).print(render_rich(insp, **kwargs))
