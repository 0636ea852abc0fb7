"""Number, shape and statistics formatting shared by every view."""

from __future__ import annotations

import html
import math

from inspector.model import (
    BindingCall, CollectionDiff, Comparison, Inspection, Leaf, LeafDelta, LeafDiff, MethodCall, Node, Stats,
)
from inspector.names import safe

SPARK = " ▁▂▃▄▅▆▇█"


def esc(text: object) -> str:
    """``str(text)`` HTML-escaped (quotes included), with control, bidi/format and separator characters
    written as visible escapes (:func:`~inspector.names.safe`): every user-controlled string an HTML view emits."""
    return html.escape(safe(text), quote=True)


def num(x: float) -> str:
    """A compact, stable rendering: 4 significant digits, ``nan``/``inf`` spelled out."""
    if isinstance(x, int):
        return f"{x:,}"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.4g}"


def count(n: int) -> str:
    return f"{n:,}"


def nbytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def shape(leaf: Leaf) -> str:
    if leaf.opaque is not None:
        return leaf.opaque
    return f"{leaf.dtype}[{','.join(map(str, leaf.shape))}]"


def value(leaf: Leaf) -> str:
    """A returned value: ``float32[4,8] mean ... [min, max]``, or what a non-array is."""
    return shape(leaf) if leaf.opaque is not None else f"{shape(leaf)} {stats(leaf.stats)}"


def stored(leaf: Leaf) -> str:
    """A stored array: :func:`value` with its bytes (and per-device bytes when sharded)."""
    if leaf.opaque is not None:
        return leaf.opaque
    placed = f" {leaf.sharding} {nbytes(leaf.per_device_bytes)}/device" if leaf.shard_shape else ""
    return f"{shape(leaf)} {nbytes(leaf.nbytes)}{placed} {stats(leaf.stats)}"


def node_summary(node: Node) -> str:
    """A variable leaf (:func:`stored`), or a level: ``16 leaves, 1,816 elements, 7.3 kB``."""
    if node.leaf is not None:
        return stored(node.leaf)
    bad = node.nonfinite
    text = f"{count(node.count)} leaves, {count(node.size)} elements, {nbytes(node.nbytes)}"
    return text + (f" !! {bad} non-finite" if bad else "")


def header(insp: Inspection, timings: bool = True) -> str:
    """``Inspection: apply AutoEncoder on <device>`` with the timings (``timings=False`` for goldens)."""
    text = f"Inspection: {insp.kind} {module_type(insp.module_type)} on {insp.device}"
    if insp.subnormals_as_zero:
        text += " [subnormals read as 0]"
    if timings:
        t = insp.timings
        text += (f" (cached, ran {t.run_ms:.1f} ms)" if t.cached else
                 f" (traced {t.trace_ms:.0f} ms, compiled {t.compile_ms:.0f} ms, ran {t.run_ms:.1f} ms)")
    return text


def comparison_header(comparison: Comparison) -> str:
    """``Comparison: train (AutoEncoder) vs eval (AutoEncoder)``."""
    (a, b), types = comparison.labels, (module_type(comparison.a.module_type), module_type(comparison.b.module_type))
    return f"Comparison: {a} ({types[0]}) vs {b} ({types[1]})"


def module_type(name: str) -> str:
    """A module's class name; ``?`` where it is not known."""
    return name or "?"


def call_kind(call: MethodCall) -> str:
    """What produced a captured value: ``sow``, or the module's class name."""
    return "sow" if call.sown else module_type(call.module_type)


def status_counts(diff: CollectionDiff) -> str:
    """``4 changed, 1 added`` (statuses with no leaf left out), or ``empty``."""
    return ", ".join(f"{n} {s}" for s, n in diff.counts().items() if n) or "empty"


def spark(hist: tuple[int, ...]) -> str:
    """A histogram as one line of block characters."""
    top = max(hist, default=0)
    if not top:
        return ""
    return "".join(SPARK[math.ceil(h / top * (len(SPARK) - 1))] for h in hist)


def nonfinite(s: Stats) -> str:
    parts = [f"{n} {name}" for n, name in ((s.nan, "nan"), (s.posinf, "+inf"), (s.neginf, "-inf")) if n]
    return ", ".join(parts)


def stats(s: Stats | None) -> str:
    if s is None:
        return "(no statistics)"
    if s.count == 0:
        return "empty"
    text = (f"of {s.of}: " if s.of else "") + f"mean {num(s.mean)} std {num(s.std)} [{num(s.min)}, {num(s.max)}]"
    if s.zeros:
        text += f" zero {s.frac_zero:.0%}"
    bad = nonfinite(s)
    return text + (f" !! {bad}" if bad else "")


def delta(d: LeafDelta) -> str:
    """One line for a delta: a mutation (``3/8 changed, max|Δ| 0.5, Δmean +0.1, Δstd 0``, before -> after)
    or a comparison of two inspections (``max|Δ| 0.5 (12% of max|a|), 3/8 changed, Δmean +0.1, ...``)."""
    if d.status in ("added", "removed", "only in a", "only in b", "equal"):
        return d.status
    moments = f"Δmean {d.delta_mean:+.4g}, Δstd {d.delta_std:+.4g}"
    # PRNG keys have no statistics: changed keys are counted, there is no magnitude to show
    keys = d.a is not None and d.b is not None and d.a.stats is None and d.b.stats is None
    if isinstance(d, LeafDiff):
        if d.a is not None and d.b is not None and d.a.shape != d.b.shape:
            return f"shape {shape(d.a)} -> {shape(d.b)}"
        if keys:
            return f"{d.changed}/{d.b.size if d.b else 0} changed"
        return f"{d.changed}/{d.b.size if d.b else 0} changed, max|Δ| {num(d.max_abs_delta)}, {moments}"
    if d.status == "shape differs" and d.a is not None and d.b is not None:
        return f"shape {shape(d.a)} vs {shape(d.b)}"
    if d.max_abs is None:
        return moments
    size = d.a.size if d.a is not None else 0
    if keys and d.changed is not None:
        return f"{d.changed:,}/{size:,} changed"
    return f"max|Δ| {num(d.max_abs)} ({d.relative:.1%} of max|a|), {d.changed:,}/{size:,} changed, {moments}"


def binding(call: BindingCall) -> str:
    """``reads params[kernel, bias]; writes batch_stats[mean, var]; rng dropout x1``."""
    parts = [f"{verb} " + "; ".join(f"{col}[{', '.join(names)}]" for col, names in table.items())
             for verb, table in (("reads", call.reads), ("writes", call.writes)) if table]
    if call.rngs:
        parts.append("rng " + ", ".join(f"{k} x{n}" for k, n in call.rngs.items()))
    if call.traced > 1:
        parts.append(f"traced {call.traced}x by its lifted transform (structure pass, then the loop)")
    return "; ".join(parts)
