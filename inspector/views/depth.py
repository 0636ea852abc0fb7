"""Activation statistics by depth: one point per captured value, in execution order.

The picture of vanishing or exploding activations: the mean with a +-std band, and the
absolute maximum (on a log scale when it spans more than a decade). :func:`depth_points`
is the data, :func:`depth_text` its plain-text lowering (the oracle for tests), and
:func:`depth_svg` an SVG without script (the widget's Intermediates tab, static HTML): both
axes carry tick labels (the x-axis by call index, the y-axes by value), and every point's
``<title>`` (hover) is its text line, which names the call's module path. Values a module
``sow``\\ ed are points too (hollow squares). A call in the body of ``nn.scan`` holds the
values of every iteration stacked along axis 0: it is one point per iteration where its
array was kept, else one point, and the figure's caption says so. Every name is HTML-escaped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from inspector.model import Inspection, Leaf, MethodCall, format_path
from inspector.names import safe
from inspector.views import palette
from inspector.views.format import esc, num

WIDTH, PANEL_H, PAD, LEFT, BOTTOM = 660, 110, 6, 76, 30
X_TICKS = 8
"""At most this many labelled ticks on the x-axis (every point keeps its hover title)."""


@dataclasses.dataclass(frozen=True)
class DepthPoint:
    """One captured call's first described output: ``order`` in execution, its ``label`` (the call's
    key, plus the output's path when it returned several arrays), and its statistics over the
    finite elements; ``nonfinite`` counts NaN and Inf. ``sown``: a value the module ``sow``\\ ed.
    ``step``: the iteration of an ``nn.scan`` body this point is (its slice along axis 0), or None.
    ``stacked``: a scanned call shown as one point over all its iterations (its array not kept)."""

    order: int
    label: str
    mean: float
    std: float
    abs_max: float
    nonfinite: int
    sown: bool = False
    step: int | None = None
    stacked: bool = False

    @property
    def tick(self) -> str:
        """The x-axis label: ``#3``, or ``#3.1`` for iteration 1 of a scanned call."""
        return f"#{self.order}" + (f".{self.step}" if self.step is not None else "")


def _leaf(call: MethodCall) -> Leaf | None:
    return next((leaf for leaf in call.outputs if leaf.stats is not None and leaf.stats.count), None)


def _label(call: MethodCall, leaf: Leaf) -> str:
    sub = call.output_path(leaf)
    return call.key + (f" {format_path(sub)}" if sub and len(call.outputs) > 1 else "")


def _point(call: MethodCall) -> DepthPoint | None:
    leaf = _leaf(call)
    if leaf is None:
        return None
    st = leaf.stats
    assert st is not None
    return DepthPoint(call.order, _label(call, leaf), st.mean, st.std, st.abs_max, st.nonfinite, call.sown)


def slice_stats(values: object) -> tuple[float, float, float, int]:
    """``(mean, std, abs_max, nonfinite)`` of an array in float64 over its finite elements (the
    definitions of :class:`~inspector.model.Stats`; NaN where none is finite; ``|z|`` for complex)."""
    import numpy as np

    v = np.asarray(values)
    v = np.abs(v).astype(np.float64) if v.dtype.kind == "c" else v.astype(np.float64)
    fin = np.isfinite(v)
    f = v[fin]
    bad = int(v.size - f.size)
    if not f.size:
        return math.nan, math.nan, math.nan, bad
    return float(f.mean()), float(f.std()), float(np.abs(f).max()), bad


def scanned(insp: Inspection) -> set[tuple[tuple[str, ...], str]]:
    """``(path, method)`` of the calls that ran in the body of a lifted transform flax traces twice
    (``nn.scan``: :attr:`~inspector.model.BindingCall.traced`), whose captures are stacked along axis 0."""
    return {(b.path, b.method) for b in insp.binding if b.traced > 1}


def _steps(call: MethodCall) -> list[DepthPoint] | None:
    """One point per iteration of a scanned call (its first output split along axis 0), or None where
    its array was not kept (or is not an array with a leading axis)."""
    leaf = _leaf(call)
    if leaf is None or not leaf.kept or not leaf.shape or leaf.opaque is not None:
        return None
    try:
        values = leaf.value
    except LookupError:
        return None
    label = _label(call, leaf)
    return [DepthPoint(call.order, label, *slice_stats(values[i]), sown=call.sown, step=i)
            for i in range(leaf.shape[0])]


def depth_points(insp: Inspection) -> list[DepthPoint]:
    """A point per captured call that has a described output (``sow``\\ ed values included), in
    execution order; a call in the body of ``nn.scan`` one point per iteration where its array was
    kept (else one point, ``stacked``)."""
    inner = scanned(insp)
    out: list[DepthPoint] = []
    for call in insp.calls:
        if (call.path, call.method) in inner:
            steps = _steps(call)
            if steps is not None:
                out += steps
                continue
            p = _point(call)
            if p is not None:
                out.append(dataclasses.replace(p, stacked=True))
            continue
        p = _point(call)
        if p is not None:
            out.append(p)
    return out


def point_line(p: DepthPoint) -> str:
    """``#order label: mean m +- s, abs-max a`` (the iteration, ``sow``, and the NaN/Inf count)."""
    what = (f" iteration {p.step}" if p.step is not None else "") + (" (sow)" if p.sown else "") + (
        " (all iterations)" if p.stacked else "")
    bad = f", {p.nonfinite} NaN/Inf" if p.nonfinite else ""
    return f"#{p.order} {safe(p.label)}{what}: mean {num(p.mean)} +- {num(p.std)}, abs-max {num(p.abs_max)}{bad}"


def caption(points: Sequence[DepthPoint]) -> str:
    """What the figure shows: how many points, of how many calls, and what is drawn how."""
    calls = len({p.order for p in points})
    parts = [f"{len(points)} point{'s' if len(points) != 1 else ''} of {calls} call{'s' if calls != 1 else ''}"]
    sown = sum(1 for p in points if p.sown)
    if sown:
        parts.append(f"{sown} sow{'s' if sown != 1 else ''} (hollow squares)")
    split = len({p.order for p in points if p.step is not None})
    if split:
        parts.append(f"{split} nn.scan call{'s' if split != 1 else ''} one point per iteration (#call.iteration)")
    stacked = sum(1 for p in points if p.stacked)
    if stacked:
        parts.append(f"{stacked} nn.scan call{'s' if stacked != 1 else ''} one point over all iterations "
                     "(arrays not kept: keep='stats')")
    return ", ".join(parts)


def depth_text(points: Sequence[DepthPoint]) -> str:
    """One line per point, in execution order."""
    return "\n".join(["activations by depth (first output of each call)"] + [point_line(p) for p in points])


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _nice(span: float) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) near a quarter of ``span``."""
    raw = span / 4 if span > 0 else 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


class _Axis:
    """Values to y pixels in a panel starting at ``top``: linear, or log10 when ``log``."""

    def __init__(self, lo: float, hi: float, top: float, log: bool):
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        if self.hi <= self.lo:
            self.lo, self.hi = self.lo - 1, self.hi + 1
        self.top = top

    def y(self, v: float) -> float:
        t = ((math.log10(v) if self.log else v) - self.lo) / (self.hi - self.lo)
        return self.top + PANEL_H - PAD - (PANEL_H - 2 * PAD) * t

    def ticks(self) -> list[float]:
        """Values to label: whole decades (log, at most 5), or round steps (linear)."""
        if self.log:
            lo, hi = math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9)
            every = max(1, math.ceil((hi - lo + 1) / 5))
            return [10.0 ** k for k in range(lo, hi + 1, every)] or [10 ** self.lo, 10 ** self.hi]
        step = _nice(self.hi - self.lo)
        first = math.ceil(self.lo / step - 1e-9)
        out, k = [], first
        while k * step <= self.hi + 1e-9 * step:
            out.append(0.0 if abs(k * step) < step * 1e-9 else k * step)
            k += 1
        return out or [self.lo, self.hi]


def _tick_label(v: float, log: bool) -> str:
    if log:
        return f"1e{round(math.log10(v)):+d}"
    return num(v)


def depth_svg(points: Sequence[DepthPoint]) -> str:
    """Two panels over the points: mean with a +-std band, and abs-max; NaN/Inf points as ``bad`` ticks;
    y tick labels on the left of each panel, x tick labels (call index) below."""
    if not points:
        return ""
    n = len(points)

    def x(i: int) -> float:
        return LEFT + (WIDTH - LEFT - PAD) * (i / (n - 1) if n > 1 else 0.5)

    ok = [(i, p) for i, p in enumerate(points) if _finite(p.mean, p.std, p.abs_max)]
    lows = [p.mean - p.std for _, p in ok] or [0.0]
    highs = [p.mean + p.std for _, p in ok] or [1.0]
    band = _Axis(min(lows), max(highs), 0, log=False)
    pos = [p.abs_max for _, p in ok if p.abs_max > 0]
    log = bool(pos) and len(pos) == len(ok) and max(pos) > 10 * min(pos)
    amax = _Axis(min(pos) if log else 0.0, max([p.abs_max for _, p in ok] or [1.0]), PANEL_H, log)
    h = 2 * PANEL_H + BOTTOM
    accent, line, bad, muted = palette.var("accent"), palette.var("line"), palette.var("bad"), palette.var("muted")
    out = [f'<svg class="fi-depth" width="{WIDTH}" height="{h}" role="img" '
           f'aria-label="activations by depth: mean +- std and abs-max of {n} points">']
    for axis, name in ((band, "mean +- std"), (amax, "abs-max" + (" (log)" if log else ""))):
        out.append(f'<rect x="{LEFT}" y="{axis.top + 1}" width="{WIDTH - LEFT - 1}" height="{PANEL_H - 2}" '
                   f'style="fill:none;stroke:{line}"/>'
                   f'<text x="{WIDTH - PAD - 2}" y="{axis.top + 13}" text-anchor="end" style="font-size:11px">'
                   f'{esc(name)}</text>')
        grid = []
        for v in axis.ticks():
            y = axis.y(v)
            if axis.top <= y <= axis.top + PANEL_H:
                grid.append(f"M{LEFT - 3} {y:.1f}H{WIDTH - 1}")
                out.append(f'<text x="{LEFT - 5}" y="{y + 3.5:.1f}" text-anchor="end" style="font-size:10px">'
                           f'{esc(_tick_label(v, axis.log))}</text>')
        if grid:
            out.append(f'<path d="{" ".join(grid)}" style="stroke:{line};stroke-width:0.5;fill:none"/>')
    if ok:
        upper = " ".join(f"{x(i):.1f},{band.y(p.mean + p.std):.1f}" for i, p in ok)
        lower = " ".join(f"{x(i):.1f},{band.y(p.mean - p.std):.1f}" for i, p in reversed(ok))
        out.append(f'<polygon points="{upper} {lower}" style="fill:{accent};fill-opacity:0.18;stroke:none"/>')
        means = " ".join(f"{x(i):.1f},{band.y(p.mean):.1f}" for i, p in ok)
        out.append(f'<polyline points="{means}" style="fill:none;stroke:{accent};stroke-width:1.5"/>')
        peaks = " ".join(f"{x(i):.1f},{amax.y(p.abs_max):.1f}" for i, p in ok)
        out.append(f'<polyline points="{peaks}" style="fill:none;stroke:{accent};stroke-width:1.5"/>')
    slot = (WIDTH - LEFT - PAD) / max(n - 1, 1)
    for i, p in enumerate(points):
        title = f"<title>{esc(point_line(p))}</title>"
        # a column the height of both panels: hovering anywhere above a point names it
        out.append(f'<rect x="{x(i) - slot / 2:.1f}" y="1" width="{slot:.1f}" height="{2 * PANEL_H - 2}" '
                   f'style="fill:transparent">{title}</rect>')
        if p.nonfinite or not _finite(p.mean, p.std, p.abs_max):
            out.append(f'<line x1="{x(i):.1f}" y1="2" x2="{x(i):.1f}" y2="{2 * PANEL_H - 2}" '
                       f'style="stroke:{bad};stroke-width:2">{title}</line>')
        if _finite(p.mean, p.std, p.abs_max):
            for y in (band.y(p.mean), amax.y(p.abs_max)):
                if p.sown:
                    out.append(f'<rect x="{x(i) - 2.5:.1f}" y="{y - 2.5:.1f}" width="5" height="5" '
                               f'style="fill:none;stroke:{accent}">{title}</rect>')
                else:
                    out.append(f'<circle cx="{x(i):.1f}" cy="{y:.1f}" r="2.2" style="fill:{accent}">{title}</circle>')
    every = max(1, math.ceil(n / X_TICKS))
    shown = list(range(0, n, every))
    if shown[-1] != n - 1 and n - 1 - shown[-1] >= every / 2:
        shown.append(n - 1)
    ticks = " ".join(f"M{x(i):.1f} {2 * PANEL_H}v4" for i in shown)
    out.append(f'<path d="{ticks}" style="stroke:{muted};fill:none"/>')
    for i in shown:
        p = points[i]
        out.append(f'<text x="{x(i):.1f}" y="{2 * PANEL_H + 14}" text-anchor="middle" style="font-size:10px">'
                   f'<title>{esc(point_line(p))}</title>{esc(p.tick)}</text>')
    out.append(f'<text x="{LEFT + (WIDTH - LEFT) / 2:.0f}" y="{h - 2}" text-anchor="middle" '
               f'style="font-size:10px;fill:{muted}">call index (execution order); hover a point for its module path'
               '</text></svg>')
    return "".join(out)


def depth_figure(points: Sequence[DepthPoint]) -> str:
    """:func:`depth_svg` in a foldable block, open, titled with :func:`caption`."""
    if not points:
        return ""
    return (f'<details open class="fi-depth-block"><summary>activations by depth (mean +- std, abs-max)'
            f'</summary><div class="fi-depth-caption">{esc(caption(points))}</div>{depth_svg(points)}</details>')
