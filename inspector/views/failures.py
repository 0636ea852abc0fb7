"""Rich and static HTML views of :class:`~inspector.failure.Failure` (``fi.last_failure()``).

Both show what :meth:`Failure.to_text` says (that text stays the oracle): the error, the calls that completed
(a table: inputs and outputs), the failing call and the calls it was inside, and, for a variables mismatch,
expected and given variables side by side with every row that differs marked. Every user-controlled
string goes through :func:`~inspector.names.safe` (rich) or :func:`~inspector.views.format.esc` (HTML).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from inspector.names import safe
from inspector.views import palette
from inspector.views.format import esc

if TYPE_CHECKING:
    from inspector.failure import CallShape, Failure

STYLES = {"header": "bold red", "title": "bold", "differs": "bold red", "note": "yellow", "muted": "dim"}


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def headline(f: Failure) -> str:
    """``Failure: apply Net raised ScopeParamShapeError`` (the text view's first line)."""
    return f"Failure: {f.kind} {f.module_type} raised {f.error_type}"


def differing(f: Failure) -> str:
    """``Variables, expected (as init creates them) vs given: 1 of 6 differ`` (the text view's line)."""
    rows = f.variables or []
    return (f"Variables, expected (as init creates them) vs given: {sum(r.status != 'same' for r in rows)} of "
            f"{len(rows)} differ")


def _words(words: tuple[str, ...] | None) -> str:
    return "-" if words is None else (", ".join(words) or "-")


def render_rich(f: Failure) -> Group:
    """``rich.print(failure)``: the error, a table of the completed calls, the failing call, and the variables
    side by side (rows that differ in red)."""
    parts: list[Text | Table] = [Text(safe(headline(f)), style=STYLES["header"])]
    if _first_line(f.message):
        parts.append(Text("  " + safe(_first_line(f.message))))
    calls = Table(title=f"Completed calls, in execution order ({len(f.completed)})", title_justify="left",
                  title_style=STYLES["title"], show_edge=False)
    for column in ("#", "call", "module", "in", "out"):
        calls.add_column(column, overflow="fold")
    for i, c in enumerate(f.completed):
        calls.add_row(str(i + 1), safe(c.key), safe(c.module_type), safe(_words(c.inputs)), safe(_words(c.outputs)))
    parts.append(calls if f.completed else Text("Completed calls, in execution order (0): none", style=STYLES["title"]))
    parts.append(Text("Failing call:" if f.failing else "Failing call: none (raised outside every module method)",
                      style=STYLES["title"]))
    for i, c in enumerate(f.failing):
        parts.append(Text(("  " if i == 0 else "  inside ") + safe(c.line(False)),
                          style=STYLES["differs"] if i == 0 else ""))
    if f.variables is not None:
        table = Table(title=differing(f), title_justify="left", title_style=STYLES["title"], show_edge=False)
        for column in ("path", "expected", "given", ""):
            table.add_column(column, overflow="fold")
        for r in f.variables:
            table.add_row(safe(r.path), safe(r.expected or "-"), safe(r.given or "-"),
                          "" if r.status == "same" else r.status,
                          style=None if r.status == "same" else STYLES["differs"])
        parts.append(table)
    parts += [Text(safe(f"note: {n}"), style=STYLES["note"]) for n in f.notes]
    return Group(*parts)


CSS = palette.custom_properties(".fi-failure") + """
.fi-failure{font:13px/1.45 var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,monospace);color:var(--fi-fg);
background:var(--fi-bg);padding:8px;border:1px solid var(--fi-line);border-radius:6px}
.fi-failure .fi-head{font-weight:600;color:var(--fi-bad)}
.fi-failure .fi-title{font-weight:600;margin-top:6px}
.fi-failure table{border-collapse:collapse;margin:2px 0 2px 12px}
.fi-failure th,.fi-failure td{text-align:left;padding:1px 10px 1px 0;vertical-align:top}
.fi-failure th{color:var(--fi-muted);font-weight:normal}
.fi-failure .fi-bad,.fi-failure .fi-bad td{color:var(--fi-bad);font-weight:600}
.fi-failure .fi-call{margin-left:12px}.fi-failure .fi-note{color:var(--fi-chg)}
"""


def _call(c: CallShape, inside: bool) -> str:
    return f'<div class="fi-call{"" if inside else " fi-bad"}">{"inside " if inside else ""}{esc(c.line(False))}</div>'


def render_html(f: Failure) -> str:
    """An embeddable ``<div>`` (its own ``<style>``, no script): the same parts as :func:`render_rich`, the
    variables as a table, expected beside given, the rows that differ marked ``fi-bad``."""
    out = [f'<div class="fi-failure"><style>{CSS}</style><div class="fi-head">{esc(headline(f))}</div>']
    if _first_line(f.message):
        out.append(f'<div class="fi-message">{esc(_first_line(f.message))}</div>')
    out.append(f'<div class="fi-title">Completed calls, in execution order ({len(f.completed)}):</div>')
    if f.completed:
        out.append('<table class="fi-completed"><tr><th>#</th><th>call</th><th>module</th><th>in</th><th>out</th></tr>')
        out += [f"<tr><td>{i + 1}</td><td>{esc(c.key)}</td><td>{esc(c.module_type)}</td>"
                f"<td>{esc(_words(c.inputs))}</td><td>{esc(_words(c.outputs))}</td></tr>"
                for i, c in enumerate(f.completed)]
        out.append("</table>")
    else:
        out.append('<div class="fi-call">(none)</div>')
    if f.failing:
        out.append('<div class="fi-title">Failing call:</div>')
        out += [_call(c, i > 0) for i, c in enumerate(f.failing)]
    else:
        out.append('<div class="fi-title">Failing call: none (raised outside every module method)</div>')
    if f.variables is not None:
        out.append(f'<div class="fi-title">{esc(differing(f))}</div>')
        out.append('<table class="fi-variables"><tr><th>path</th><th>expected</th><th>given</th><th></th></tr>')
        for r in f.variables:
            cls = "" if r.status == "same" else ' class="fi-bad"'
            out.append(f"<tr{cls} data-status=\"{r.status}\"><td>{esc(r.path)}</td><td>{esc(r.expected or '-')}</td>"
                       f"<td>{esc(r.given or '-')}</td><td>{'' if r.status == 'same' else r.status}</td></tr>")
        out.append("</table>")
    out += [f'<div class="fi-note">note: {esc(n)}</div>' for n in f.notes]
    out.append("</div>")
    return "".join(out)
