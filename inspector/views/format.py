"""Number, shape and statistics formatting shared by every view."""

from __future__ import annotations

import math

from inspector.model import Leaf, LeafDiff, Stats

SPARK = " ▁▂▃▄▅▆▇█"


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


def nbytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def shape(leaf: Leaf) -> str:
    if leaf.opaque is not None:
        return leaf.opaque
    return f"{leaf.dtype}[{','.join(map(str, leaf.shape))}]"


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


def delta(d: LeafDiff) -> str:
    if d.status == "added":
        return "added"
    if d.status == "removed":
        return "removed"
    if d.before is not None and d.after is not None and d.before.shape != d.after.shape:
        return f"shape {shape(d.before)} -> {shape(d.after)}"
    size = d.after.size if d.after else 0
    return (f"{d.changed}/{size} changed, max|Δ| {num(d.max_abs_delta)}, "
            f"Δmean {d.delta_mean:+.4g}, Δstd {d.delta_std:+.4g}")


def binding(call) -> str:
    """``reads params[kernel, bias]; writes batch_stats[mean, var]; rng dropout x1``."""
    parts = [f"{verb} " + "; ".join(f"{col}[{', '.join(names)}]" for col, names in table.items())
             for verb, table in (("reads", call.reads), ("writes", call.writes)) if table]
    if call.rngs:
        parts.append("rng " + ", ".join(f"{k} x{n}" for k, n in call.rngs.items()))
    if call.traced > 1:
        parts.append(f"traced {call.traced}x by its lifted transform (structure pass, then the loop)")
    return "; ".join(parts)


def leaf_delta(d) -> str:
    """``max|Δ| 0.5 (12% of max|a|), 3/8 changed, Δmean +0.1`` for a LeafDelta."""
    if d.status in ("only in a", "only in b"):
        return d.status
    if d.status == "shape differs":
        return f"shape {shape(d.a)} vs {shape(d.b)}"
    if d.status == "equal":
        return "equal"
    text = f"Δmean {d.delta_mean:+.4g}, Δstd {d.delta_std:+.4g}"
    if d.max_abs is not None:
        text = (f"max|Δ| {num(d.max_abs)} ({d.relative:.1%} of max|a|), {d.changed:,}/{d.a.size:,} changed, "
                + text)
    return text
