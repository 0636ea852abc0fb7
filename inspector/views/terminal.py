"""A rich tree for terminals: the text view's content, with non-finite values in red.

Every piece of text goes through :func:`_text`, which escapes control and bidi characters
(:func:`~inspector.names.safe`): only rich's own styling reaches the terminal raw.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.text import Text
from rich.tree import Tree

from inspector.model import Inspection, Node, path_str
from inspector.names import safe
from inspector.views import format as F
from inspector.views.text import header, node_summary


def _text(text: str, style: str = "") -> Text:
    return Text(safe(text), style=style)


def _line(name: str, summary: str, bad: bool = False) -> Text:
    return Text.assemble((safe(name), "bold"), ": ", (safe(summary), "red" if bad else ""))


def _add(tree: Tree, node: Node, depth: int, max_depth: int, max_children: int) -> None:
    children = list(node.children.values())
    for child in children[:max_children]:
        bad = bool(child.nonfinite)
        branch = tree.add(_line(child.name, node_summary(child), bad))
        if depth < max_depth:
            _add(branch, child, depth + 1, max_depth, max_children)
        elif child.children:
            branch.add(_text(f"... {child.count} leaves below", style="dim"))
    if len(children) > max_children:
        tree.add(_text(f"... {len(children) - max_children} more", style="dim"))


def render_rich(insp: Inspection, max_depth: int = 4, max_children: int = 50) -> Group:
    """Renderable for ``rich.print``: output, variables, mutations, intermediates."""
    parts = [_text(header(insp), style="bold cyan")]
    if insp.kind != "init":
        out = Tree(_text("output", style="bold"))
        for leaf in insp.outputs:
            bad = bool(leaf.stats and leaf.stats.nonfinite)
            out.add(_line(path_str(leaf.path) if leaf.path else "y",
                          f"{F.shape(leaf)} {F.stats(leaf.stats) if leaf.opaque is None else ''}", bad))
        parts.append(out)
    variables = Tree(_line("variables", node_summary(insp.variables.root)))
    _add(variables, insp.variables.root, 1, max_depth, max_children)
    parts.append(variables)
    if insp.diffs:
        mutated = Tree(_text("mutated", style="bold"))
        for diff in insp.diffs:
            col = mutated.add(_text(diff.name, style="bold"))
            for d in diff.ranked()[:max_children]:
                style = {"changed": "yellow", "added": "green", "removed": "red"}.get(d.status, "dim")
                col.add(_text(f"{path_str(d.path[1:])}: {F.delta(d)}", style=style))
        parts.append(mutated)
    if insp.calls:
        first = insp.first_nonfinite()
        calls = Tree(_text(f"intermediates ({len(insp.calls)} calls, execution order)", style="bold"))
        if first is not None:
            calls.add(_text(f"first non-finite: {first.key}", style="bold red"))
        for call in insp.calls[: max_children * 4]:
            kind = "sow" if call.sown else call.module_type
            node = calls.add(_text(f"#{call.order} {call.key} ({kind})",
                                  style="bold red" if call is first else ("red" if call.nonfinite else "")))
            for leaf in call.outputs:
                sub = path_str(leaf.path[len(call.path) + 1:]) if len(leaf.path) > len(call.path) + 1 else ""
                summary = f"{F.shape(leaf)} {F.stats(leaf.stats) if leaf.opaque is None else ''}"
                node.add(_line(sub or "value", summary, bool(leaf.stats and leaf.stats.nonfinite)))
        if len(insp.calls) > max_children * 4:
            calls.add(_text(f"... {len(insp.calls) - max_children * 4} more calls", style="dim"))
        parts.append(calls)
    return Group(*parts)


def print_inspection(insp: Inspection, console: Console | None = None, **kwargs) -> None:
    """Prints the rich tree to ``console`` (a new one by default)."""
    (console or Console()).print(render_rich(insp, **kwargs))
