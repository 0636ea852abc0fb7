"""A watched run's history as a plain-text table: one line per (step, site).

The oracle the other history views are checked against; every name goes through
:func:`~inspector.names.safe`.
"""

from __future__ import annotations

from inspector.history import History, Scalars
from inspector.names import safe
from inspector.views.format import num


def cell(scalars: Scalars, field: str) -> str:
    """One field, as every history view writes it (``-`` where there is none)."""
    v = getattr(scalars, field)
    return "-" if v is None else num(v)


def history_table(history: History, fields: tuple[str, ...]) -> str:
    """Columns ``step``, ``kind``, ``site`` and ``fields``; the first non-finite row marked ``!``."""
    first = history.first_nonfinite()
    head = ["step", "kind", "site", *fields]
    body = [[str(step), site.kind, safe(site.name), *(cell(sc, f) for f in fields)]
            for step, site, sc in history.rows()]
    marks = ["!" if first == (int(r[0]), s) else " " for r, (_, s, _) in zip(body, history.rows())]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    fmt = [f"{c:<{w}}" if i < 3 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(head, widths))]
    lines = ["  " + "  ".join(fmt).rstrip()]
    for mark, r in zip(marks, body):
        lines.append(mark + " " + "  ".join(f"{c:<{w}}" if i < 3 else f"{c:>{w}}"
                                           for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if first is not None:
        lines.append(f"first non-finite: step {first[0]}, {first[1].kind} {safe(first[1].name)}")
    elif not body:
        lines.append("(nothing recorded)")
    return "\n".join(lines)
