"""A watched run's history as the data its charts draw, and as one static HTML page.

:func:`payload` is what the front end (``static/history.js``, on uPlot) draws, in the live widget
(:mod:`~inspector.views.history_widget`) and in the static page (:func:`history_html`) alike:

- ``sites``: every site's label (``kind name``, through :func:`~inspector.names.safe`);
- ``heat``: a site x step heatmap of each of ``heatFields`` (float32, little-endian, base64), at
  most about ``cells`` cells a field: beyond it neighbouring steps are merged into one column (its
  largest value; non-finite if any of its steps is), and beyond ``HEAT_SITES`` sites the non-finite
  sites and then the first ones are kept (``omitted`` says how many were not);
- ``series``: per charted site (by index), its steps ``x`` and per field the values ``y`` (float64,
  base64); beyond ``points`` points, buckets of neighbouring steps give two points each, at the
  bucket's first and last step, holding the bucket's min and max in the order they came (so every
  min and max is kept), and ``bad`` lists every non-finite step with its NaN and Inf counts;
- ``hist``: per charted site recorded with ``fi.watch(..., histograms=True)``, its histograms over
  steps (:func:`histogram`);
- ``first``: the first non-finite step and site, ``status``: :func:`status_line`.

Numbers travel as base64 of typed arrays (``NaN`` where a site has no record); names are
strings the page shows as text, never as HTML.
"""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import numpy as np

from inspector.history import History, Site, Snapshot, StepHistograms
from inspector.names import safe
from inspector.views import palette
from inspector.views.format import esc
from inspector.views.histogram_text import bin_label

FIELDS = ("mean", "std", "abs_max", "zero_frac", "norm", "ratio")
"""The fields charted per site (``ratio`` where the site has one)."""
LABELS = {"mean": "mean", "std": "std", "abs_max": "abs max", "zero_frac": "zero fraction", "norm": "norm",
          "ratio": "ratio"}
"""The one name of each field in every chart, button and readout."""
HEAT_FIELDS = ("std", "abs_max", "zero_frac")
CHART_POINTS = 1000
"""The most points a chart's series holds (beyond it, min/max buckets of neighbouring steps)."""
HEAT_CELLS = 16_000
"""About how many cells of one field the static page's heatmap holds."""
HEAT_SITES = 200
"""The most sites (rows) a heatmap holds."""
F32 = float(np.finfo(np.float32).max)
"""Heatmap values are float32 (shading, and a readout of 4 digits): finite ones beyond it read as it."""
HIST_COLUMNS = 400
"""The most step columns a histogram over steps sends (neighbouring steps' counts added beyond it)."""
PAGE_BYTES = 960_000
"""The static page's size bound: charts are embedded for as many sites as fit under it."""

_STATIC = pathlib.Path(__file__).parent / "static"
UPLOT_JS = (_STATIC / "vendor" / "uplot.iife.min.js").read_text(encoding="utf-8")
ESM = UPLOT_JS + "\n" + (_STATIC / "history.js").read_text(encoding="utf-8")
"""uPlot (MIT, vendored) then the history front end: one ES module (anywidget's ``_esm``)."""
CSS = (palette.custom_properties(".fi-history,.fi-page") + (_STATIC / "vendor" / "uplot.min.css").read_text()
       + (_STATIC / "history.css").read_text())
"""The palette as ``--fi-*`` properties (dark where the system prefers it), uPlot's and our style."""


def status_line(history: History | Snapshot) -> str:
    """``N recorded steps (a to b), K sites`` and the first non-finite step and site, if any (a
    row merging older steps counts once)."""
    snap = history.snapshot() if isinstance(history, History) else history
    steps = snap.steps[snap.present.any(axis=1)] if len(snap.steps) else snap.steps
    span = f"{int(steps[0])} to {int(snap.last[-1])}" if len(steps) else "-"
    text = f"{len(steps)} recorded steps ({span}), {len(snap.sites)} sites"
    first = snap.first_nonfinite()
    return text + (f"; first non-finite: step {int(snap.steps[first[0]])}, {site_label(snap.sites[first[1]])}"
                   if first is not None else "")


def site_label(site: Site) -> str:
    """``kind name``, safe to show (control and bidi characters escaped)."""
    return safe(f"{site.kind} {site.name}")


def b64(a: np.ndarray, dtype: str) -> str:
    """``a`` as little-endian ``dtype`` (``"<f8"``, ``"<f4"``, ``"u1"``), base64."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def unb64(text: str, dtype: str) -> np.ndarray:
    """The inverse of :func:`b64` (for tests and tools)."""
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def _starts(n: int, groups: int) -> np.ndarray:
    return np.unique(np.linspace(0, n, max(1, min(n, groups)), endpoint=False).astype(np.int64))


def minmax_buckets(v: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket ``v[starts[i]:starts[i+1]]``: its (min, max) in the order they occur (``NaN``s
    ignored; ``NaN`` for a bucket of ``NaN`` alone), as two arrays: the earlier and the later."""
    n = len(v)
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
    pos = np.arange(n)
    nan = np.isnan(v)
    lo = np.minimum.reduceat(np.where(nan, np.inf, v), starts)
    hi = np.maximum.reduceat(np.where(nan, -np.inf, v), starts)
    at_lo = np.minimum.reduceat(np.where(~nan & (v == lo[group]), pos, n), starts)
    at_hi = np.minimum.reduceat(np.where(~nan & (v == hi[group]), pos, n), starts)
    empty = at_lo == n
    lo, hi = np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)
    first = at_lo <= at_hi
    return np.where(first, lo, hi), np.where(first, hi, lo)


def series(snap: Snapshot, j: int, points: int = CHART_POINTS) -> dict[str, Any]:
    """Site ``j``'s charts (see the module docstring): ``x``, ``y`` per field, ``bad``, and
    ``buckets`` (0 where every stored step is a point)."""
    rows = np.flatnonzero(snap.present[:, j])
    steps = snap.steps[rows]
    fields = [f for f in FIELDS if f != "ratio" or bool(np.any(~np.isnan(snap.values("ratio")[rows, j])))]
    bad = np.flatnonzero(snap.nonfinite[rows, j])
    out: dict[str, Any] = {"bad": [[int(steps[k]), int(snap.cells["nan"][rows[k], j]),
                                    int(snap.cells["inf"][rows[k], j])] for k in bad.tolist()]}
    if len(rows) <= points:
        out["x"], out["buckets"] = steps.tolist(), 0
        out["y"] = {f: b64(snap.values(f)[rows, j], "<f8") for f in fields}
        return out
    starts = _starts(len(rows), points // 2)
    ends = np.append(starts[1:], len(rows)) - 1
    out["x"] = np.stack([steps[starts], steps[ends]], axis=1).ravel().tolist()
    out["buckets"] = len(starts)
    out["y"] = {f: b64(np.stack(minmax_buckets(snap.values(f)[rows, j], starts), axis=1).ravel(), "<f8")
                for f in fields}
    return out


def histogram(h: StepHistograms, columns: int = HIST_COLUMNS) -> dict[str, Any]:
    """A site's histograms over steps as the charts draw them: ``steps``/``last`` per column (beyond
    ``columns``, neighbouring stored rows merged: their counts added, exactly), ``labels`` of the
    bins shown (from the lowest to the highest bin occupied in any row, ascending by value), ``zero``
    the zero bin's index among them (-1 if outside), ``counts`` (columns x bins, float64, base64)."""
    n = len(h.first)
    occupied = np.flatnonzero(h.counts.sum(axis=0)) if n else np.zeros(0, np.int64)
    if not len(occupied):
        return {"steps": [], "last": [], "labels": [], "zero": -1, "counts": ""}
    lo, hi = int(occupied[0]), int(occupied[-1])
    starts = _starts(n, columns)
    counts = np.add.reduceat(h.counts[:, lo:hi + 1], starts, axis=0)
    ends = np.append(starts[1:], n) - 1
    zero = (len(h.counts[0]) // 2) - lo
    return {"steps": h.first[starts].tolist(), "last": h.last[ends].tolist(),
            "labels": [bin_label(b) for b in range(lo, hi + 1)], "zero": zero if 0 <= zero <= hi - lo else -1,
            "counts": b64(counts.astype(np.float64), "<f8")}


def heat_sites(snap: Snapshot, limit: int = HEAT_SITES) -> list[int]:
    """The sites a heatmap shows, in site order: all, or the non-finite ones (earliest first)
    and then the first ones, up to ``limit``."""
    n = len(snap.sites)
    if n <= limit:
        return list(range(n))
    bad = snap.nonfinite
    first_bad = np.where(bad.any(axis=0), np.argmax(bad, axis=0), len(snap.steps))
    chosen = [int(j) for j in np.argsort(first_bad, kind="stable") if first_bad[j] < len(snap.steps)][:limit]
    chosen += [j for j in range(n) if j not in set(chosen)][: limit - len(chosen)]
    return sorted(chosen)


def heat(snap: Snapshot, fields: tuple[str, ...] = HEAT_FIELDS, cells: int = HEAT_CELLS,
         sites: int = HEAT_SITES) -> dict[str, Any]:
    """The heatmap (see the module docstring): ``sites`` (indices), ``steps``/``last`` per column,
    ``values`` per field (sites x columns, float32, finite values clipped to its range), ``flags``
    (0 a value, 1 non-finite, 2 nothing stored), ``first`` ``[row, column]`` of the first
    non-finite cell, ``omitted`` sites."""
    chosen = heat_sites(snap, sites)
    n = len(snap.steps)
    out: dict[str, Any] = {"sites": chosen, "omitted": len(snap.sites) - len(chosen), "fields": list(fields)}
    if not n or not chosen:
        return {**out, "steps": [], "last": [], "values": {f: "" for f in fields}, "flags": "", "first": None}
    starts = _starts(n, max(8, cells // len(chosen)))
    present = np.logical_or.reduceat(snap.present[:, chosen], starts, axis=0).T
    bad = np.logical_or.reduceat(snap.nonfinite[:, chosen], starts, axis=0).T
    flags = np.where(bad, 1, np.where(present, 0, 2))
    values = {}
    for f in fields:
        with np.errstate(invalid="ignore", over="ignore"):
            top = np.fmax.reduceat(snap.values(f)[:, chosen], starts, axis=0).T
            values[f] = b64(np.where(np.isfinite(top), np.clip(top, -F32, F32), top), "<f4")
    first = snap.first_nonfinite()
    at = None
    if first is not None and first[1] in chosen:
        at = [chosen.index(first[1]), int(np.searchsorted(starts, first[0], "right") - 1)]
    ends = np.append(starts[1:], n) - 1
    return {**out, "steps": snap.steps[starts].tolist(), "last": snap.last[ends].tolist(),
            "values": values, "flags": b64(flags, "u1"), "first": at}


def payload(snap: Snapshot, charted: list[int], *, title: str = "", heat_fields: tuple[str, ...] = HEAT_FIELDS,
            cells: int = HEAT_CELLS, points: int = CHART_POINTS, selected: int | None = None,
            window: int | None = None, other: tuple[str, Snapshot] | None = None,
            hists: dict[int, StepHistograms] | None = None) -> dict[str, Any]:
    """What ``history.js`` draws (see the module docstring): charts of the sites ``charted``
    (and, with ``other`` = ``(title, snapshot)``, of the same sites in that run, overlaid; with
    ``hists``, the histograms over steps of those of them that have one);
    ``selected`` the site shown first (the first non-finite one by default); ``window``: the
    charts open on the latest ``window`` steps, widened to the first non-finite step (``None``: all)."""
    at = snap.first_nonfinite()
    first = None if at is None else {"step": int(snap.steps[at[0]]), "site": at[1]}
    if selected is None:
        selected = at[1] if at is not None else 0
    data: dict[str, Any] = {
        "title": safe(title), "status": status_line(snap), "first": first, "fields": list(FIELDS),
        "labels": LABELS, "sites": [site_label(s) for s in snap.sites], "selected": selected,
        "heat": heat(snap, heat_fields, cells), "series": {str(j): series(snap, j, points) for j in charted},
        "charted": len(charted), "range": None,
        "hist": {str(j): histogram(h) for j, h in (hists or {}).items() if j in charted}}
    present = snap.steps[snap.present.any(axis=1)] if len(snap.steps) else snap.steps
    if window is not None and len(present):
        lo = int(snap.last[-1]) - int(window)
        if first is not None:
            lo = min(lo, first["step"] - max(1, int(window) // 4))
        data["range"] = [max(lo, int(present[0])), int(snap.last[-1])]
    if other is not None:
        name, osnap = other
        where = {s: k for k, s in enumerate(osnap.sites)}
        data["other"] = {"title": safe(name), "series": {
            str(j): series(osnap, where[snap.sites[j]], points) for j in charted if snap.sites[j] in where}}
    return data


def chart_order(snap: Snapshot) -> list[int]:
    """Sites by how much a reader wants their charts: the non-finite ones (earliest first), then
    by largest ``abs_max``."""
    bad = snap.nonfinite
    n = len(snap.steps)
    first_bad = np.where(bad.any(axis=0), np.argmax(bad, axis=0), n) if n else np.zeros(len(snap.sites), int)
    with np.errstate(invalid="ignore"):
        top = np.nan_to_num(np.nanmax(np.where(np.isfinite(snap.values("abs_max")), snap.values("abs_max"), np.nan),
                                      axis=0, initial=-np.inf), nan=-np.inf) if n else np.zeros(len(snap.sites))
    return [int(j) for j in np.lexsort((-top, first_bad))]


def script_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element (``<``, ``>``, ``&``, U+2028/9 escaped)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return text


def _page(data: dict[str, Any], title: str) -> str:
    module = ESM + "\nmount(document.getElementById('fi-root'), JSON.parse(document.getElementById('fi-data')" \
                   ".textContent));\n"
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f'<title>{esc(title)}</title><style>{CSS}</style></head><body class="fi-page">'
            f'<div id="fi-root"></div><script type="application/json" id="fi-data">{script_json(data)}</script>'
            f'<script type="module">{module}</script></body></html>\n')


def history_html(history: History, fields: tuple[str, ...] = HEAT_FIELDS, title: str = "Watched training",
                 other: History | None = None, other_title: str = "other run") -> str:
    """The whole page (UTF-8, self-contained, no network: uPlot and ``history.js`` inlined, the
    data embedded as JSON): the status line, the heatmap of ``fields`` and a site's charts (with
    ``other``, that run's charts of the same site overlaid). Charts are embedded for as many sites
    as keep the page under :data:`PAGE_BYTES` (non-finite sites first, then by largest abs max), at
    the most points per chart (up to :data:`CHART_POINTS`, down to 200) at which all would fit;
    the page says how many were left out."""
    snap = history.snapshot()
    osnap = None if other is None else (other_title, other.snapshot())
    with_hist = set(history.histogram_sites())
    hists = {j: history.histogram(s) for j, s in enumerate(snap.sites) if s in with_hist}
    fields = tuple(f for f in fields if f in LABELS) or HEAT_FIELDS
    cells = max(1000, min(HEAT_CELLS, 3 * HEAT_CELLS // len(fields)))
    order = chart_order(snap)
    data = payload(snap, [], title=title, heat_fields=fields, cells=cells, other=osnap)
    if not order:
        return _page(data, title)
    base = len(_page(data, title).encode())
    budget, charted = PAGE_BYTES - base, []
    for points in (CHART_POINTS, 600, 400, 200):  # the most points at which every site's charts fit
        if len(order) * (len(script_json(series(snap, order[0], points))) + 16) * 1.05 < budget:
            break
    for j in order:
        cost = len(script_json(series(snap, j, points))) + 16
        if j in hists:
            cost += len(script_json(histogram(hists[j]))) + 16
        if osnap is not None and snap.sites[j] in osnap[1].sites:
            cost += len(script_json(series(osnap[1], osnap[1].sites.index(snap.sites[j]), points))) + 16
        if cost > budget:
            break
        budget -= cost
        charted.append(j)
    data = payload(snap, sorted(charted), title=title, heat_fields=fields, cells=cells, points=points, other=osnap,
                   selected=charted[0] if charted else None, hists=hists)
    page = _page(data, title)
    while len(page.encode()) > PAGE_BYTES and len(charted) > 1:  # a guard: the estimate above was short
        charted.pop()
        data = payload(snap, sorted(charted), title=title, heat_fields=fields, cells=cells, points=points,
                       other=osnap, selected=charted[0], hists=hists)
        page = _page(data, title)
    return page
