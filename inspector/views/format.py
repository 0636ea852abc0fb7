"""Number, shape and statistics formatting shared by every view."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from inspector.model import (
    BindingCall, CollectionDiff, Comparison, Inspection, Leaf, LeafDelta, LeafDiff, MethodCall, Node,
    NonfiniteChanges, Stats,
)
from inspector.names import format_key, safe

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


_PLURALS = {"leaf": "leaves", "child": "children"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 leaf``, ``2 leaves``, ``0 calls``: ``n`` (with thousands separators) and the word in the right number."""
    return f"{n:,} {word if n == 1 else many or _PLURALS.get(word) or word + 's'}"


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
    """A returned value: ``float32[4,8] mean ... [min, max]``, or what a non-array is (its NaN/Inf count
    not included: :func:`fact` says it first)."""
    return shape(leaf) if leaf.opaque is not None else f"{shape(leaf)} {stats(leaf.stats, bad=False)}"


def stored(leaf: Leaf) -> str:
    """A stored array: :func:`value` with its bytes (and per-device bytes when sharded)."""
    if leaf.opaque is not None:
        return leaf.opaque
    placed = f" {leaf.sharding} {nbytes(leaf.per_device_bytes)}/device" if leaf.shard_shape else ""
    return f"{shape(leaf)} {nbytes(leaf.nbytes)}{placed} {stats(leaf.stats, bad=False)}"


def fact(leaf: Leaf | None) -> str:
    """The key fact of an array, said before anything else: ``!! 255 nan, 1 +inf``; ``''`` when finite."""
    bad = nonfinite(leaf.stats) if leaf is not None and leaf.stats is not None else ""
    return f"!! {bad}" if bad else ""


def node_fact(node: Node) -> str:
    """:func:`fact` of a variable, or of a level: ``!! 3 non-finite``."""
    if node.leaf is not None:
        return fact(node.leaf)
    return f"!! {node.nonfinite:,} non-finite" if node.nonfinite else ""


def node_summary(node: Node) -> str:
    """A variable leaf (:func:`stored`), or a level: ``16 leaves, 1,816 elements, 7.3 kB`` (the NaN/Inf
    count is :func:`node_fact`)."""
    if node.leaf is not None:
        return stored(node.leaf)
    return f"{plural(node.count, 'leaf')}, {plural(node.size, 'element')}, {nbytes(node.nbytes)}"


def with_fact(fact: str, summary: str) -> str:
    """``fact; summary`` (either may be empty): a row's text on one line."""
    return "; ".join(p for p in (fact, summary) if p)


def header(insp: Inspection, timings: bool = True) -> str:
    """``Inspection: apply AutoEncoder on <device>`` (``grad`` for ``fi.inspect_grad``) with the timings
    (``timings=False`` for goldens); ``[subnormals read as 0]`` only where it applies (:func:`subnormal_note`)."""
    kind = "grad" if insp.grads is not None else insp.kind
    text = f"Inspection: {kind} {module_type(insp.module_type)} on {insp.device}"
    if subnormal_note(insp):
        text += " [subnormals read as 0]"
    if timings:
        t = insp.timings
        text += (f" (cached, ran {t.run_ms:.1f} ms)" if t.cached else
                 f" (traced {t.trace_ms:.0f} ms, compiled {t.compile_ms:.0f} ms, ran {t.run_ms:.1f} ms)")
    return text


SUBNORMAL_NOTE = "zero counts include subnormal floats: this device reads them as 0, and so do the statistics"


def subnormal_note(insp: Inspection) -> str:
    """:data:`SUBNORMAL_NOTE` where it applies: the device flushes subnormals and a floating-point array
    counts zeros that are not all of its elements (an all-zero array reads the same either way); else ``''``."""
    if not insp.subnormals_as_zero:
        return ""
    groups = [insp.outputs, insp.variables.leaves(), (leaf for c in insp.calls for leaf in c.outputs)]
    if insp.grads is not None:
        groups.append(insp.grads.leaves())
    for group in groups:
        for leaf in group:
            s = leaf.stats
            if s is not None and 0 < s.zeros < s.count and "float" in leaf.dtype:
                return SUBNORMAL_NOTE
    return ""


def comparison_header(comparison: Comparison) -> str:
    """``Comparison: train (AutoEncoder) vs eval (AutoEncoder); first divergence: intermediates
    encoder/BatchNorm_0:__call__[0]`` (``; no differences`` when every leaf is equal)."""
    (a, b), types = comparison.labels, (module_type(comparison.a.module_type), module_type(comparison.b.module_type))
    first = comparison.first_divergence()
    where = f"first divergence: {first.section} {first.key}" if first is not None else "no differences"
    return f"Comparison: {a} ({types[0]}) vs {b} ({types[1]}); {where}"


def module_type(name: str) -> str:
    """A module's class name; ``?`` where it is not known."""
    return name or "?"


def call_kind(call: MethodCall) -> str:
    """What produced a captured value: ``sow``, or the module's class name."""
    return "sow" if call.sown else module_type(call.module_type)


def call_labels(calls: Sequence[MethodCall]) -> dict[int, str]:
    """A short name for each call, by ``order``: its key without what adds nothing. A module path with one
    captured call of ``__call__`` is named by its path alone (``encoder/Dense_0``); a method called once
    at its path drops the index (``/:encode``); otherwise the whole key (``d:__call__[1]``)."""
    at: dict[tuple[str, ...], int] = {}
    per: dict[tuple[tuple[str, ...], str], int] = {}
    for c in calls:
        at[c.path] = at.get(c.path, 0) + 1
        per[(c.path, c.method)] = per.get((c.path, c.method), 0) + 1
    out = {}
    for c in calls:
        if at[c.path] == 1 and c.method == "__call__" and c.path:
            out[c.order] = format_key(c.path)
        elif per[(c.path, c.method)] == 1:
            out[c.order] = format_key(c.path, c.method)
        else:
            out[c.order] = c.key
    return out


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


def stats(s: Stats | None, bad: bool = True) -> str:
    """``mean 0.1 std 1 [-2, 3] zero 5%`` over the finite elements (``no finite element`` where there is
    none), then ``!! 3 nan`` (``bad=False``: left to :func:`fact`, said first)."""
    if s is None:
        return "(no statistics)"
    if s.count == 0:
        return "empty"
    prefix = f"of {s.of}: " if s.of else ""
    if s.count == s.nonfinite:
        text = prefix + "no finite element"
    else:
        text = prefix + f"mean {num(s.mean)} std {num(s.std)} [{num(s.min)}, {num(s.max)}]"
    if s.zeros:
        text += f" zero {s.frac_zero:.0%}"
    worst = nonfinite(s) if bad else ""
    return text + (f" !! {worst}" if worst else "")


def nonfinite_changes(nf: NonfiniteChanges) -> str:
    """``2 to nan, 1 from nan, 1 to/from inf`` (kinds with no element left out)."""
    return ", ".join(f"{n:,} {what}" for n, what in ((nf.to_nan, "to nan"), (nf.from_nan, "from nan"),
                                                    (nf.inf, "to/from inf")) if n)


def _moments(d: LeafDelta) -> str:
    """``Δmean +0.1, Δstd 0`` where both sides have finite statistics (else nothing: not a number)."""
    parts = [f"Δ{name} {v:+.4g}" for name, v in (("mean", d.delta_mean), ("std", d.delta_std)) if math.isfinite(v)]
    return ", ".join(parts)


def _stats_nonfinite(d: LeafDelta) -> str:
    """``non-finite none -> 3 nan`` from the two sides' statistics, where their NaN/Inf counts differ."""
    sa, sb = (d.a.stats if d.a else None), (d.b.stats if d.b else None)
    if sa is None or sb is None or (sa.nan, sa.posinf, sa.neginf) == (sb.nan, sb.posinf, sb.neginf):
        return ""
    return f"non-finite {nonfinite(sa) or 'none'} -> {nonfinite(sb) or 'none'}"


def delta(d: LeafDelta) -> str:
    """One line for a delta, its key fact first (:func:`delta_parts`): how many elements changed, and how
    many of those changes are not numbers (to or from NaN, to or from Inf), then ``max|Δ|`` (over the
    changes that are numbers; relative to ``max|a|`` for a comparison) and the change of the mean and std.
    A mutation reads ``3/8 changed, max|Δ| 0.5, Δmean +0.1, Δstd +0``; a comparison
    ``3/8 changed, max|Δ| 0.5 (12% of max|a|), Δmean +0.1, Δstd +0``. A NaN/Inf change never reads as zero."""
    return with_fact(*delta_parts(d))


def delta_parts(d: LeafDelta) -> tuple[str, str]:
    """:func:`delta` as ``(fact, rest)``: the status or the changed count (with its NaN/Inf changes), then
    the magnitudes."""
    if d.status in ("added", "removed", "only in a", "only in b", "equal"):
        return d.status, ""
    if d.a is not None and d.b is not None and d.a.shape != d.b.shape:
        return f"shape {shape(d.a)} {'->' if isinstance(d, LeafDiff) else 'vs'} {shape(d.b)}", ""
    if d.status == "shape differs" and d.a is not None and d.b is not None:
        return f"dtype {shape(d.a)} vs {shape(d.b)}", ""
    if d.changed is None:  # statistics only: no element-wise difference to show
        rest = ", ".join(p for p in (_moments(d), _stats_nonfinite(d)) if p)
        return ("same statistics" if d.equal else "statistics only"), rest
    side = d.b if isinstance(d, LeafDiff) else d.a
    size = side.size if side is not None else 0
    head = f"{d.changed:,}/{size:,} changed"
    # PRNG keys have no statistics: changed keys are counted, there is no magnitude to show; nothing
    # changed: nothing more to say
    if (d.a is not None and d.b is not None and d.a.stats is None and d.b.stats is None) or not d.changed:
        return head, ""
    parts = []
    nf = d.nonfinite_delta()
    if nf is None:
        parts.append(_stats_nonfinite(d))  # where they are, unknown (not kept): what the statistics say
    elif nf.total:
        head += f" ({nonfinite_changes(nf)})"
    if d.max_abs:
        mx = f"max|Δ| {num(d.max_abs)}"
        if not isinstance(d, LeafDiff) and math.isfinite(d.max_abs) and d.scale is not None:
            mx += f" ({d.relative:.1%} of max|a|)"
        parts.append(mx)
    parts.append(_moments(d))
    return head, ", ".join(p for p in parts if p)


def binding(call: BindingCall) -> str:
    """``reads params[kernel, bias]; writes batch_stats[mean, var]; rng dropout x1``."""
    parts = [f"{verb} " + "; ".join(f"{col}[{', '.join(names)}]" for col, names in table.items())
             for verb, table in (("reads", call.reads), ("writes", call.writes)) if table]
    if call.rngs:
        parts.append("rng " + ", ".join(f"{k} x{n}" for k, n in call.rngs.items()))
    if call.traced > 1:
        parts.append(f"traced {call.traced}x by its lifted transform (structure pass, then the loop)")
    return "; ".join(parts)
