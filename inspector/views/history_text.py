"""A watched run's history as a plain-text table: one line per stored (step, site).

The oracle the other history views are checked against; every name goes through
:func:`~inspector.names.safe`. A row that merges older steps reads ``first-last`` in the step
column. Beyond ``limit`` lines, the table keeps the first quarter of them, the latest half and
the first non-finite lines in between (up to a quarter), with a ``... N lines left out (steps a
to b) ...`` line for each gap, so a long run prints what a reader looks for in bounded time.
"""

from __future__ import annotations

import numpy as np

from inspector.history import History, Scalars, Snapshot
from inspector.names import safe
from inspector.views.format import num


def cell(scalars: Scalars, field: str) -> str:
    """One field, as every history view writes it (``-`` where there is none)."""
    v = getattr(scalars, field)
    return "-" if v is None else num(v)


def raw_cell(v: float | int, field: str) -> str:
    """:func:`cell` of a stored value (``ratio`` ``NaN`` for none)."""
    if field in ("nan", "inf", "count", "applications"):
        return num(int(v))
    return "-" if field == "ratio" and v != v else num(float(v))


def step_label(snap: Snapshot, i: int) -> str:
    """Row ``i``'s step, ``first-last`` where it merges several."""
    a, b = int(snap.steps[i]), int(snap.last[i])
    return str(a) if a == b else f"{a}-{b}"


def shown(n: int, bad: np.ndarray, limit: int) -> np.ndarray:
    """Which of ``n`` lines a table of at most about ``limit`` lines keeps (see the module docstring)."""
    keep = np.zeros(n, bool)
    if n <= limit:
        keep[:] = True
        return keep
    keep[: limit // 4] = True
    keep[n - limit // 2:] = True
    keep[np.flatnonzero(bad & ~keep)[: limit // 4]] = True
    return keep


def history_table(history: History, fields: tuple[str, ...], limit: int = 2000) -> str:
    """Columns ``step``, ``kind``, ``site`` and ``fields``; the first non-finite row marked ``!``."""
    snap = history.snapshot()
    first = snap.first_nonfinite()
    rows, cols = np.nonzero(snap.present)
    keep = shown(len(rows), snap.nonfinite[rows, cols], limit)
    head = ["step", "kind", "site", *fields]
    body: list[list[str] | str] = []
    marks: list[str] = []
    gap = 0
    for k in range(len(rows) + 1):
        if k < len(rows) and not keep[k]:
            gap += 1
            continue
        if gap:
            a, b = int(snap.steps[rows[k - gap]]), int(snap.last[rows[k - 1]])
            body.append(f"  ... {gap} lines left out (steps {a} to {b}) ...")
            marks.append(" ")
            gap = 0
        if k == len(rows):
            break
        i, j = int(rows[k]), int(cols[k])
        sc, site = snap.scalars(i, j), snap.sites[j]
        body.append([step_label(snap, i), site.kind, safe(site.name), *(cell(sc, f) for f in fields)])
        marks.append("!" if first == (i, j) else " ")
    table = [r for r in body if isinstance(r, list)]
    widths = [max(len(c) for c in col) for col in zip(head, *table)]

    def line(r: list[str]) -> str:
        return "  ".join(f"{c:<{w}}" if i < 3 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    lines = ["  " + line(head)]
    lines += [r if isinstance(r, str) else mark + " " + line(r) for mark, r in zip(marks, body)]
    if first is not None:
        site = snap.sites[first[1]]
        lines.append(f"first non-finite: step {int(snap.steps[first[0]])}, {site.kind} {safe(site.name)}")
    elif not table:
        lines.append("(nothing recorded)")
    return "\n".join(lines)
