"""Activation statistics by depth: one point per captured call, in execution order.

The picture of vanishing or exploding activations: the mean with a +-std band, and the
absolute maximum (on a log scale when it spans more than two decades). :func:`depth_points`
is the data, :func:`depth_text` its plain-text lowering (the oracle for tests), and
:func:`depth_svg` an SVG without script (the widget's Intermediates tab, static HTML). Every
point's ``<title>`` is its text line; every name is HTML-escaped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from inspector.model import Inspection, MethodCall, path_str
from inspector.names import safe
from inspector.views import palette
from inspector.views.format import esc, num

WIDTH, PANEL_H, PAD, LEFT = 660, 110, 6, 76


@dataclasses.dataclass(frozen=True)
class DepthPoint:
    """One captured call's first described output: ``order`` in execution, its ``label`` (the call's
    key, plus the output's path when it returned several arrays), and its statistics over the
    finite elements; ``nonfinite`` counts NaN and Inf."""

    order: int
    label: str
    mean: float
    std: float
    abs_max: float
    nonfinite: int


def _point(call: MethodCall) -> DepthPoint | None:
    for leaf in call.outputs:
        st = leaf.stats
        if st is None or not st.count:
            continue
        sub = call.output_path(leaf)
        label = call.key + (f" {path_str(sub)}" if sub and len(call.outputs) > 1 else "")
        return DepthPoint(call.order, label, st.mean, st.std, st.abs_max, st.nonfinite)
    return None


def depth_points(insp: Inspection) -> list[DepthPoint]:
    """A point per captured call (not sow'ed values) that has a described output, in execution order."""
    return [p for p in (_point(c) for c in insp.calls if not c.sown) if p is not None]


def point_line(p: DepthPoint) -> str:
    """``#order label: mean m +- s, abs-max a`` (and the NaN/Inf count)."""
    bad = f", {p.nonfinite} NaN/Inf" if p.nonfinite else ""
    return f"#{p.order} {safe(p.label)}: mean {num(p.mean)} +- {num(p.std)}, abs-max {num(p.abs_max)}{bad}"


def depth_text(points: Sequence[DepthPoint]) -> str:
    """One line per point, in execution order."""
    return "\n".join(["activations by depth (first output of each call)"] + [point_line(p) for p in points])


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


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

    def labels(self) -> tuple[str, str]:
        return tuple(num(10 ** v if self.log else v) for v in (self.hi, self.lo))  # type: ignore[return-value]


def depth_svg(points: Sequence[DepthPoint]) -> str:
    """Two panels over the calls: mean with a +-std band, and abs-max; NaN/Inf calls as ``bad`` ticks."""
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
    log = bool(pos) and len(pos) == len(ok) and max(pos) > 100 * min(pos)
    amax = _Axis(min(pos) if log else 0.0, max([p.abs_max for _, p in ok] or [1.0]), PANEL_H, log)
    h = 2 * PANEL_H + 16
    accent, line, bad = palette.var("accent"), palette.var("line"), palette.var("bad")
    out = [f'<svg class="fi-depth" width="{WIDTH}" height="{h}" role="img" '
           f'aria-label="activations by depth: mean +- std and abs-max of {n} calls">']
    for axis, name in ((band, "mean +- std"), (amax, "abs-max" + (" (log)" if log else ""))):
        top_label, bottom_label = axis.labels()
        out.append(f'<rect x="{LEFT}" y="{axis.top + 1}" width="{WIDTH - LEFT - 1}" height="{PANEL_H - 2}" '
                   f'style="fill:none;stroke:{line}"/>'
                   f'<text x="{LEFT + 4}" y="{axis.top + 13}" style="font-size:11px">{esc(name)}</text>'
                   f'<text x="{LEFT - 4}" y="{axis.top + 12}" text-anchor="end" style="font-size:10px">'
                   f'{esc(top_label)}</text><text x="{LEFT - 4}" y="{axis.top + PANEL_H - 4}" text-anchor="end" '
                   f'style="font-size:10px">{esc(bottom_label)}</text>')
    if ok:
        upper = " ".join(f"{x(i):.1f},{band.y(p.mean + p.std):.1f}" for i, p in ok)
        lower = " ".join(f"{x(i):.1f},{band.y(p.mean - p.std):.1f}" for i, p in reversed(ok))
        out.append(f'<polygon points="{upper} {lower}" style="fill:{accent};fill-opacity:0.18;stroke:none"/>')
        means = " ".join(f"{x(i):.1f},{band.y(p.mean):.1f}" for i, p in ok)
        out.append(f'<polyline points="{means}" style="fill:none;stroke:{accent};stroke-width:1.5"/>')
        peaks = " ".join(f"{x(i):.1f},{amax.y(p.abs_max):.1f}" for i, p in ok)
        out.append(f'<polyline points="{peaks}" style="fill:none;stroke:{accent};stroke-width:1.5"/>')
    for i, p in enumerate(points):
        title = f"<title>{esc(point_line(p))}</title>"
        if p.nonfinite or not _finite(p.mean, p.std, p.abs_max):
            out.append(f'<line x1="{x(i):.1f}" y1="2" x2="{x(i):.1f}" y2="{2 * PANEL_H - 2}" '
                       f'style="stroke:{bad};stroke-width:2">{title}</line>')
        if _finite(p.mean, p.std, p.abs_max):
            for y in (band.y(p.mean), amax.y(p.abs_max)):
                out.append(f'<circle cx="{x(i):.1f}" cy="{y:.1f}" r="2.2" style="fill:{accent}">{title}</circle>')
    out.append(f'<text x="{LEFT}" y="{h - 3}" style="font-size:10px">#{points[0].order}</text>'
               f'<text x="{WIDTH - PAD}" y="{h - 3}" text-anchor="end" style="font-size:10px">'
               f'#{points[-1].order} (execution order)</text></svg>')
    return "".join(out)


def depth_figure(points: Sequence[DepthPoint]) -> str:
    """:func:`depth_svg` in a foldable block, open, titled as :func:`depth_text` is."""
    if not points:
        return ""
    return (f'<details open class="fi-depth-block"><summary>activations by depth ({len(points)} calls: '
            f'mean +- std, abs-max)</summary>{depth_svg(points)}</details>')
