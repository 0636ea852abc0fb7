"""A watched run's history as one static HTML page: SVG, no script.

First the first non-finite step and site (if any), then per field a site x step heatmap (colour
within each site's own range, non-finite cells in the palette's ``bad`` colour, the first one
outlined), then per site a line chart of each field over the steps. Every cell and point has a
``<title>`` with the numbers the text table (:mod:`~inspector.views.history_text`) shows; every
name is HTML-escaped.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from inspector.history import History, Snapshot, merge_groups
from inspector.views import palette
from inspector.views.history_text import cell, raw_cell
from inspector.views.format import esc, num

CELL_W, CELL_H, LABEL_W = 14, 14, 260
CHART_W, CHART_H, PAD = 220, 70, 4

CSS = palette.custom_properties(".fi-hist") + """
.fi-hist{font:13px/1.45 var(--fi-mono);color:var(--fi-fg);background:var(--fi-bg);padding:8px}
.fi-hist h2{font-size:14px;margin:14px 0 4px}.fi-hist .fi-bad{color:var(--fi-bad);font-weight:600}
.fi-hist svg text{fill:var(--fi-fg);font:11px var(--fi-mono)}.fi-hist .fi-muted{fill:var(--fi-muted)}
.fi-hist .fi-site{display:inline-block;vertical-align:top;margin:4px 12px 8px 0}
.fi-hist .fi-charts{display:flex;gap:8px}
.fi-hist .fi-first{stroke:var(--fi-fg);stroke-width:2}
"""


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _shade(t: float) -> str:
    """The accent colour at opacity ``t`` in [0, 1] (as a fill plus fill-opacity)."""
    return f'style="fill:{palette.var("accent")};fill-opacity:{0.08 + 0.92 * t:.3f}"'


HEAT_CELLS = 1000
"""About how many cells a heatmap of a long run keeps (neighbouring steps merged beyond it)."""
CHART_POINTS = 60
"""The most points a line chart draws (beyond it, neighbouring steps merged: their min and max)."""
CHART_DOTS = 600
"""Charts get a dot (with its numbers) per step while steps x sites stays within this."""
CHARTED = ("mean", "std", "abs_max", "zero_frac", "norm")


@dataclasses.dataclass(frozen=True)
class Drawn:
    """What a view draws: ``snap`` (rows merged where there were too many), the first non-finite
    ``(row, site index)`` in it, and per field the ``(min, max)`` of the stored rows each drawn row
    merges (``None`` where nothing was merged)."""

    snap: Snapshot
    first: tuple[int, int] | None
    spread: dict[str, tuple[np.ndarray, np.ndarray]] | None


def drawn(snap: Snapshot, rows: int, fields: tuple[str, ...] = CHARTED) -> Drawn:
    """``snap`` with at most ``rows`` rows: evenly spaced groups of neighbouring rows merged
    exactly (:func:`~inspector.history.merge_groups`); non-finite counts are kept by the merge."""
    first = snap.first_nonfinite()
    n = len(snap.steps)
    if n <= rows:
        return Drawn(snap, first, None)
    starts = np.unique(np.linspace(0, n, max(1, rows), endpoint=False).astype(np.int64))
    merged = Snapshot(snap.steps[starts], np.maximum.reduceat(snap.last, starts), snap.sites,
                      merge_groups(snap.cells, starts))
    spread = {}
    for f in fields:
        v = snap.values(f)
        with np.errstate(invalid="ignore"):
            spread[f] = (np.fmin.reduceat(v, starts, axis=0), np.fmax.reduceat(v, starts, axis=0))
    at = None if first is None else (int(np.searchsorted(starts, first[0], "right") - 1), first[1])
    return Drawn(merged, at, spread)


def _label(snap: Snapshot, i: int) -> str:
    a, b = int(snap.steps[i]), int(snap.last[i])
    return str(a) if a == b else f"{a}-{b}"


def heatmap(d: Drawn, field: str) -> str:
    """Sites down, rows (steps) across; each site's cells shaded within its own finite range over
    those steps (a zero fraction within [0, 1])."""
    snap = d.snap
    sites, n = snap.sites, len(snap.steps)
    w, h = LABEL_W + CELL_W * n, CELL_H * (len(sites) + 1)
    out = [f'<svg width="{w}" height="{h}" role="img" aria-label="{esc(field)} by site and step">']
    present, bad = snap.present, snap.nonfinite
    values = snap.values(field)
    stored = snap.cells[field]
    labels = [_label(snap, i) for i in range(n)]
    colours = {"bad": f'style="fill:{palette.var("bad")}"', "none": f'style="fill:{palette.var("line")}"'}
    for r, site in enumerate(sites):
        y = CELL_H * (r + 1)
        out.append(f'<text x="0" y="{y + CELL_H - 3}">{esc(site.kind[0])} {esc(site.name)}</text>')
        col = values[:, r]
        fin = col[np.isfinite(col) & ~bad[:, r]]
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
        if field == "zero_frac":  # a fraction: shaded on [0, 1], comparable across sites
            lo, hi = 0.0, 1.0
        name, what = esc(site), esc(field)
        rows = np.flatnonzero(present[:, r])
        for i, v, nonfinite, raw in zip(rows.tolist(), col[rows].tolist(), bad[rows, r].tolist(),
                                        stored[rows, r].tolist()):
            if nonfinite:
                fill = colours["bad"]
            elif not math.isfinite(v):
                fill = colours["none"]
            else:
                fill = _shade((v - lo) / (hi - lo) if hi > lo else 0.5)
            mark = ' class="fi-first"' if d.first == (i, r) else ""
            out.append(f'<rect x="{LABEL_W + CELL_W * i}" y="{y}" width="{CELL_W - 1}" height="{CELL_H - 1}" '
                       f'{fill}{mark}><title>step {labels[i]} {name}: {what} {esc(raw_cell(raw, field))}'
                       f'</title></rect>')
    for i in range(0, n, max(1, n // 10)):
        out.append(f'<text class="fi-muted" x="{LABEL_W + CELL_W * i}" y="{CELL_H - 3}">{int(snap.steps[i])}</text>')
    out.append("</svg>")
    return "".join(out)


def line_chart(d: Drawn, j: int, field: str, dots: bool = True) -> str:
    """``field`` of site ``j`` over the steps (finite values joined, or the min and max of merged
    steps as two lines; non-finite steps as ``bad`` ticks; with ``dots``, a dot per unmerged step)."""
    snap, site = d.snap, d.snap.sites[j]
    rows = np.flatnonzero(snap.present[:, j])
    steps = snap.steps[rows].astype(np.float64)
    bad = snap.nonfinite[rows, j]
    if d.spread is not None and field in d.spread:
        lines = [d.spread[field][0][rows, j], d.spread[field][1][rows, j]]
    else:
        lines = [snap.values(field)[rows, j]]
    fin = np.concatenate([v[np.isfinite(v)] for v in lines]) if lines else np.zeros(0)
    lo_s, hi_s = (float(steps[0]), float(steps[-1])) if len(steps) else (0.0, 1.0)
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)

    def px(step: float) -> float:
        return PAD + (CHART_W - 2 * PAD) * ((step - lo_s) / (hi_s - lo_s) if hi_s > lo_s else 0.5)

    def py(v: float) -> float:
        return CHART_H - 14 - (CHART_H - 28) * ((v - lo) / (hi - lo) if hi > lo else 0.5)

    last = esc(cell(snap.scalars(int(rows[-1]), j), field)) if len(rows) else ""
    out = [f'<svg width="{CHART_W}" height="{CHART_H}" role="img" aria-label="{esc(field)} of {esc(site)}">',
           f'<rect x="0" y="0" width="{CHART_W}" height="{CHART_H}" style="fill:none;stroke:{palette.var("line")}"/>',
           f'<text x="{PAD}" y="11">{esc(field)}</text>',
           f'<text class="fi-muted" x="{CHART_W - PAD}" y="11" text-anchor="end">{last}</text>']
    if d.spread is not None and fin.size:
        out.append(f"<title>{esc(field)} of {esc(site)}, steps {int(lo_s)} to {int(snap.last[rows[-1]])} "
                   f"(neighbouring steps merged): min {esc(num(lo))}, max {esc(num(hi))}</title>")
    for v in lines:
        ok = np.isfinite(v)
        if ok.sum() > 1:
            at, val = steps[ok], v[ok]
            xs = PAD + (CHART_W - 2 * PAD) * ((at - lo_s) / (hi_s - lo_s) if hi_s > lo_s else 0.5 + 0 * at)
            ys = CHART_H - 14 - (CHART_H - 28) * ((val - lo) / (hi - lo) if hi > lo else 0.5 + 0 * val)
            pts = " ".join(map("{:.1f},{:.1f}".format, xs.tolist(), ys.tolist()))
            out.append(f'<polyline points="{pts}" style="fill:none;stroke:{palette.var("accent")};'
                       f'stroke-width:{1.5 if len(lines) == 1 else 1}"/>')
    for k, i in enumerate(rows):
        if bad[k]:
            sc = snap.scalars(int(i), j)
            x = px(float(steps[k]))
            out.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{CHART_H - 14}" '
                       f'style="stroke:{palette.var("bad")};stroke-width:2"><title>step {_label(snap, int(i))}: '
                       f'{sc.nan} NaN, {sc.inf} Inf</title></line>')
    if d.spread is None and dots:
        for k, i in enumerate(rows):
            v = float(lines[0][k])
            if math.isfinite(v):
                sc = snap.scalars(int(i), j)
                out.append(f'<circle cx="{px(float(steps[k])):.1f}" cy="{py(v):.1f}" r="1.5" '
                           f'style="fill:{palette.var("accent")}"><title>step {_label(snap, int(i))}: '
                           f'{esc(field)} {esc(cell(sc, field))}</title></circle>')
    out.append(f'<text class="fi-muted" x="{PAD}" y="{CHART_H - 3}">{int(lo_s)}</text>'
               f'<text class="fi-muted" x="{CHART_W - PAD}" y="{CHART_H - 3}" text-anchor="end">{int(hi_s)}</text>')
    out.append("</svg>")
    return "".join(out)


def history_html(history: History, fields: tuple[str, ...], title: str = "Watched training") -> str:
    """The whole page (UTF-8, self-contained, no script). A long run is drawn with neighbouring
    steps merged: heatmaps of about :data:`HEAT_CELLS` cells (at least 4 steps), charts of at most :data:`CHART_POINTS`
    points (the min and max of the steps merged), so the page stays about a megabyte for a few
    dozen sites however long the run; the first non-finite step and site are named exactly."""
    snap = history.snapshot()
    steps = snap.steps[snap.present.any(axis=1)] if len(snap.steps) else snap.steps
    n_sites = max(1, len(snap.sites))
    heat = drawn(snap, max(4, HEAT_CELLS // n_sites))
    charts = drawn(snap, max(8, min(CHART_POINTS, 10 * HEAT_CELLS // n_sites)))
    dots = len(snap.steps) <= max(16, CHART_DOTS // n_sites)
    first = heat.first
    parts = [f"<h1 style=\"font-size:15px\">{esc(title)}</h1>",
             f"<div>{len(steps)} recorded steps ({esc(int(steps[0])) if len(steps) else '-'} to "
             f"{esc(int(snap.last[-1])) if len(steps) else '-'}), {len(snap.sites)} sites</div>"]
    if first is not None:
        at = snap.first_nonfinite()
        assert at is not None
        parts.append(f'<div class="fi-bad">first non-finite: step {int(snap.steps[at[0]])}, '
                     f'{esc(snap.sites[at[1]])}</div>')
    if heat.spread is not None:
        parts.append(f"<div>drawn with neighbouring steps merged: {len(heat.snap.steps)} columns</div>")
    for field in fields:
        parts.append(f"<h2>{esc(field)} by site and step</h2>{heatmap(heat, field)}")
    parts.append("<h2>per site</h2>")
    for j, site in enumerate(snap.sites):
        row = "".join(line_chart(charts, j, f, dots) for f in CHARTED)
        parts.append(f'<div class="fi-site"><div>{esc(site)}</div><div class="fi-charts">{row}</div></div>')
    return ('<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width"><title>{esc(title)}</title>'
            f'<style>{CSS}</style></head><body style="margin:12px"><div class="fi-hist">'
            + "".join(parts) + "</div></body></html>\n")
