"""Plain-text rendering of an Inspection: the golden oracle for every other view.

Every line goes through :func:`~inspector.names.safe`, so names from user data never
reach a terminal with control or bidi characters unescaped.
"""

from __future__ import annotations

from typing import Iterator

from inspector.model import Inspection, Node, path_str
from inspector.names import safe
from inspector.views import format as F


def header(insp: Inspection, timings: bool = True) -> str:
    text = f"Inspection: {insp.kind} {insp.module_type} on {insp.device}"
    if insp.subnormals_as_zero:
        text += " [subnormals read as 0]"
    if timings:
        t = insp.timings
        text += (f" (cached, ran {t.run_ms:.1f} ms)" if t.cached else
                 f" (traced {t.trace_ms:.0f} ms, compiled {t.compile_ms:.0f} ms, ran {t.run_ms:.1f} ms)")
    return text


def node_summary(node: Node) -> str:
    if node.leaf is not None:
        leaf = node.leaf
        if leaf.opaque is not None:
            return leaf.opaque
        placed = f" {leaf.sharding} {F.nbytes(leaf.per_device_bytes)}/device" if leaf.shard_shape else ""
        return f"{F.shape(leaf)} {F.nbytes(leaf.nbytes)}{placed} {F.stats(leaf.stats)}"
    bad = node.nonfinite
    text = f"{F.count(node.count)} leaves, {F.count(node.size)} elements, {F.nbytes(node.nbytes)}"
    return text + (f" !! {bad} non-finite" if bad else "")


def tree_lines(node: Node, indent: str = "  ", depth: int = 1,
               max_children: int | None = None) -> Iterator[str]:
    """Indented lines for ``node``'s children, recursively (``max_children`` per level)."""
    children = list(node.children.values())
    shown = children if max_children is None else children[:max_children]
    for child in shown:
        yield f"{indent * depth}{child.name}: {node_summary(child)}"
        yield from tree_lines(child, indent, depth + 1, max_children)
    if len(shown) < len(children):
        yield f"{indent * depth}... {len(children) - len(shown)} more"


def variables_lines(insp: Inspection, max_children: int | None = None) -> Iterator[str]:
    yield f"variables: {node_summary(insp.variables.root)}"
    yield from tree_lines(insp.variables.root, max_children=max_children)


def mutation_lines(insp: Inspection) -> Iterator[str]:
    if not insp.diffs:
        return
    yield "mutated:"
    for diff in insp.diffs:
        counts = {s: len(diff.by_status(s)) for s in ("changed", "added", "unchanged", "removed")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        yield f"  {diff.name}: {summary or 'empty'}"
        for d in diff.ranked():
            yield f"    {path_str(d.path[1:])}: {F.delta(d)}"


def call_lines(insp: Inspection) -> Iterator[str]:
    if not insp.calls:
        return
    kept = "" if insp.kept else ", statistics only"
    yield f"intermediates: {len(insp.calls)} calls in execution order{kept}"
    first = insp.first_nonfinite()
    if first is not None:
        yield f"  first non-finite: {first.key}"
    for call in insp.calls:
        kind = "sow" if call.sown else call.module_type or "?"
        mark = " <- first non-finite" if call is first else ""
        if len(call.outputs) == 1 and call.outputs[0].path[-1] == f"{call.method}[{call.index}]":
            leaf = call.outputs[0]
            yield (f"  #{call.order} {call.key} ({kind}): {F.shape(leaf)} "
                   f"{F.stats(leaf.stats) if leaf.opaque is None else ''}".rstrip() + mark)
            continue
        yield f"  #{call.order} {call.key} ({kind}): {len(call.outputs)} outputs{mark}"
        base = len(call.path) + 1
        for leaf in call.outputs:
            yield f"    {path_str(leaf.path[base:])}: {F.shape(leaf)} {F.stats(leaf.stats)}"


def binding_lines(insp: Inspection) -> Iterator[str]:
    if not insp.binding:
        return
    yield f"binding: {len(insp.binding)} method calls in order"
    for call in insp.binding:
        touched = F.binding(call)
        yield f"  {'  ' * call.depth}{call.key} ({call.module_type}){': ' + touched if touched else ''}"


def output_lines(insp: Inspection) -> Iterator[str]:
    if insp.kind == "init":
        return
    if len(insp.outputs) == 1 and not insp.outputs[0].path:
        leaf = insp.outputs[0]
        yield f"output: {F.shape(leaf)} {F.stats(leaf.stats) if leaf.opaque is None else ''}".rstrip()
        return
    yield f"output: {len(insp.outputs)} leaves"
    for leaf in insp.outputs:
        yield f"  {path_str(leaf.path)}: {F.shape(leaf)} {F.stats(leaf.stats)}"


def render(insp: Inspection, timings: bool = True, max_children: int | None = None,
           binding: bool = True) -> str:
    """The whole inspection as text (``timings=False`` for stable golden files)."""
    lines = [header(insp, timings)]
    for section in (output_lines(insp), variables_lines(insp, max_children),
                    mutation_lines(insp), call_lines(insp), binding_lines(insp) if binding else ()):
        lines.extend(section)
    lines.extend(f"note: {n}" for n in insp.notes)
    return "\n".join(map(safe, lines)) + "\n"


def render_comparison(comparison, limit: int | None = 30) -> str:
    """A comparison as text: per section, the largest divergences first."""
    a, b = comparison.labels
    lines = [f"Comparison: {a} ({comparison.a.module_type}) vs {b} ({comparison.b.module_type})"]
    for section in ("output", "variables", "intermediates"):
        ranked = comparison.ranked(section)
        if not ranked:
            continue
        differ = sum(1 for d in ranked if d.status != "equal")
        lines.append(f"{section}: {differ} of {len(ranked)} differ")
        shown = ranked if limit is None else ranked[:limit]
        lines.extend(f"  {d.key}: {F.leaf_delta(d)}" for d in shown)
        if len(shown) < len(ranked):
            lines.append(f"  ... {len(ranked) - len(shown)} more")
    return "\n".join(map(safe, lines)) + "\n"
