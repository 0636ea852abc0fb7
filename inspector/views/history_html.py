"""A watched run's history as one static HTML page: SVG, no script.

First the first non-finite step and site (if any), then per field a site x step heatmap (colour
within each site's own range, non-finite cells in the palette's ``bad`` colour, the first one
outlined), then per site a line chart of each field over the steps. Every cell and point has a
``<title>`` with the numbers the text table (:mod:`~inspector.views.history_text`) shows; every
name is HTML-escaped.
"""

from __future__ import annotations

import math

from inspector.history import History, Scalars, Site
from inspector.views import palette
from inspector.views.history_text import cell
from inspector.views.format import esc

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


def heatmap(history: History, field: str, first: tuple[int, Site] | None, steps: list[int] | None = None) -> str:
    """Sites down, steps across (every recorded step, or ``steps``); each site's cells shaded within
    its own finite range over those steps (a zero fraction within [0, 1])."""
    sites, steps = history.sites(), history.steps() if steps is None else steps
    col = {s: i for i, s in enumerate(steps)}
    w, h = LABEL_W + CELL_W * len(steps), CELL_H * (len(sites) + 1)
    out = [f'<svg width="{w}" height="{h}" role="img" aria-label="{esc(field)} by site and step">']
    for r, site in enumerate(sites):
        by_step = {step: sc for step, sc in history[site].items() if step in col}
        y = CELL_H * (r + 1)
        out.append(f'<text x="0" y="{y + CELL_H - 3}">{esc(site.kind[0])} {esc(site.name)}</text>')
        vals = [getattr(sc, field) for sc in by_step.values()]
        fin = [float(v) for v in vals if _finite(v)]
        lo, hi = (min(fin), max(fin)) if fin else (0.0, 0.0)
        if field == "zero_frac":  # a fraction: shaded on [0, 1], comparable across sites
            lo, hi = 0.0, 1.0
        for step, sc in by_step.items():
            x = LABEL_W + CELL_W * col[step]
            v = getattr(sc, field)
            if not sc.finite:
                fill = f'style="fill:{palette.var("bad")}"'
            elif not _finite(v):
                fill = f'style="fill:{palette.var("line")}"'
            else:
                fill = _shade((float(v) - lo) / (hi - lo) if hi > lo else 0.5)
            mark = ' class="fi-first"' if first == (step, site) else ""
            out.append(f'<rect x="{x}" y="{y}" width="{CELL_W - 1}" height="{CELL_H - 1}" {fill}{mark}>'
                       f'<title>step {step} {esc(site)}: {esc(field)} {esc(cell(sc, field))}</title></rect>')
    for step in steps[:: max(1, len(steps) // 10)]:
        out.append(f'<text class="fi-muted" x="{LABEL_W + CELL_W * col[step]}" y="{CELL_H - 3}">{step}</text>')
    out.append("</svg>")
    return "".join(out)


def line_chart(by_step: dict[int, Scalars], field: str, site: Site) -> str:
    """``field`` over the steps (finite values joined; non-finite steps as ``bad`` ticks)."""
    steps = sorted(by_step)
    fin = [(s, float(getattr(by_step[s], field))) for s in steps if _finite(getattr(by_step[s], field))]
    lo_s, hi_s = (steps[0], steps[-1]) if steps else (0, 1)
    lo, hi = (min(v for _, v in fin), max(v for _, v in fin)) if fin else (0.0, 1.0)

    def px(step: int) -> float:
        return PAD + (CHART_W - 2 * PAD) * ((step - lo_s) / (hi_s - lo_s) if hi_s > lo_s else 0.5)

    def py(v: float) -> float:
        return CHART_H - 14 - (CHART_H - 28) * ((v - lo) / (hi - lo) if hi > lo else 0.5)

    last = esc(cell(by_step[steps[-1]], field)) if steps else ""
    out = [f'<svg width="{CHART_W}" height="{CHART_H}" role="img" aria-label="{esc(field)} of {esc(site)}">',
           f'<rect x="0" y="0" width="{CHART_W}" height="{CHART_H}" style="fill:none;stroke:{palette.var("line")}"/>',
           f'<text x="{PAD}" y="11">{esc(field)}</text>',
           f'<text class="fi-muted" x="{CHART_W - PAD}" y="11" text-anchor="end">{last}</text>']
    if len(fin) > 1:
        pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in fin)
        out.append(f'<polyline points="{pts}" style="fill:none;stroke:{palette.var("accent")};stroke-width:1.5"/>')
    for s in steps:
        sc = by_step[s]
        v = getattr(sc, field)
        if not sc.finite:
            out.append(f'<line x1="{px(s):.1f}" y1="14" x2="{px(s):.1f}" y2="{CHART_H - 14}" '
                       f'style="stroke:{palette.var("bad")};stroke-width:2"><title>step {s}: {sc.nan} NaN, '
                       f'{sc.inf} Inf</title></line>')
        if _finite(v):
            out.append(f'<circle cx="{px(s):.1f}" cy="{py(float(v)):.1f}" r="1.5" style="fill:{palette.var("accent")}">'
                       f'<title>step {s}: {esc(field)} {esc(cell(sc, field))}</title></circle>')
    out.append(f'<text class="fi-muted" x="{PAD}" y="{CHART_H - 3}">{lo_s}</text>'
               f'<text class="fi-muted" x="{CHART_W - PAD}" y="{CHART_H - 3}" text-anchor="end">{hi_s}</text>')
    out.append("</svg>")
    return "".join(out)


def history_html(history: History, fields: tuple[str, ...], title: str = "Watched training") -> str:
    """The whole page (UTF-8, self-contained, no script)."""
    first = history.first_nonfinite()
    steps = history.steps()
    parts = [f"<h1 style=\"font-size:15px\">{esc(title)}</h1>",
             f"<div>{len(steps)} recorded steps ({esc(steps[0]) if steps else '-'} to "
             f"{esc(steps[-1]) if steps else '-'}), {len(history.sites())} sites</div>"]
    if first is not None:
        parts.append(f'<div class="fi-bad">first non-finite: step {first[0]}, {esc(first[1])}</div>')
    for field in fields:
        parts.append(f"<h2>{esc(field)} by site and step</h2>{heatmap(history, field, first)}")
    parts.append("<h2>per site</h2>")
    for site in history.sites():
        by_step = history[site]
        charts = "".join(line_chart(by_step, f, site) for f in ("mean", "std", "abs_max", "zero_frac", "norm"))
        parts.append(f'<div class="fi-site"><div>{esc(site)}</div><div class="fi-charts">{charts}</div></div>')
    return ('<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width"><title>{esc(title)}</title>'
            f'<style>{CSS}</style></head><body style="margin:12px"><div class="fi-hist">'
            + "".join(parts) + "</div></body></html>\n")
