"""A live notebook view of a watched run's :class:`~inspector.history.History`.

A status line (steps, sites, the first non-finite step and site in the ``bad`` colour), a
site x step heatmap of one field (std, abs-max or zero fraction; the latest ``window`` stored steps),
a list of sites, and the line charts of the chosen site. The SVG is
:mod:`~inspector.views.history_html`'s, so the live view and the static export draw the same
thing.

The training loop is never blocked: the history is filled by the runtime's callback thread,
and a daemon thread of this widget redraws at most every ``interval`` seconds, only when
:attr:`History.version` has moved. :meth:`WatchWidget.close` stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W

import numpy as np

from inspector.history import History, Site, Snapshot
from inspector.names import safe
from inspector.views.format import esc
from inspector.views.history_html import CHART_POINTS, CSS, Drawn, drawn, heatmap, line_chart
from inspector.views.widgets import close_parts, close_tree

HEAT_CELLS = 6000
"""About how many cells the live heatmap draws at most (its window shrinks for many sites)."""
FIELDS = (("std", "std"), ("abs-max", "abs_max"), ("zero fraction", "zero_frac"))
CHARTS = ("mean", "std", "abs_max", "zero_frac", "norm", "ratio")


def status_line(history: History | Snapshot) -> str:
    """``N recorded steps (a to b), K sites`` and the first non-finite step and site, if any (a
    row merging older steps counts once)."""
    snap = history.snapshot() if isinstance(history, History) else history
    steps = snap.steps[snap.present.any(axis=1)] if len(snap.steps) else snap.steps
    span = f"{int(steps[0])} to {int(snap.last[-1])}" if len(steps) else "-"
    text = f"{len(steps)} recorded steps ({span}), {len(snap.sites)} sites"
    first = snap.first_nonfinite()
    return text + (f"; first non-finite: step {int(snap.steps[first[0]])}, {snap.sites[first[1]]}"
                   if first is not None else "")


def _site_label(site: Site) -> str:
    return safe(f"{site.kind} {site.name}")


class WatchWidget(W.VBox):
    """The live view of ``history`` (see the module docstring); :meth:`refresh` redraws now."""

    def __init__(self, history: History, interval: float = 0.5, window: int = 120,
                 sync: Callable[[], None] | None = None, **kwargs: Any):
        self.history, self.interval, self.window = history, float(interval), int(window)
        self._sync = sync  # brings in what is ready and not yet in the history (never waits)
        self.status = W.HTML()
        self.field = W.ToggleButtons(options=FIELDS, value="std", style={"button_width": "auto"})
        self.heat = W.HTML(layout=W.Layout(overflow="auto"))
        self.sites = W.Select(options=[], rows=10, layout=W.Layout(width="auto", min_width="240px"))
        self.charts = W.HTML()
        super().__init__(children=[self.status, self.field, self.heat,
                                   W.HBox([self.sites, self.charts])], **kwargs)
        self.add_class("fi-watch")
        self._chosen = False  # the user picked a site: a new non-finite one no longer takes the selection
        self._setting = False  # the selection is being set by a redraw, not by the user
        self._drawing = threading.Lock()
        self._seen = -1
        self.field.observe(lambda _: self.refresh(), "value")
        self.sites.observe(self._on_site, "value")
        self.refresh()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="inspector-watch-view", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            if self._sync is not None:
                try:
                    self._sync()
                except Exception:  # noqa: BLE001 - raised again where the history is read (watch.history)
                    self._sync = None
            if self.history.version != self._seen:
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a closed comm or a dead kernel ends the view, not the run
                    return

    def _on_site(self, change: dict) -> None:
        if change.get("new") is not None and not self._setting:
            self._chosen = True
        self._draw_charts()

    def refresh(self) -> None:
        """Redraws everything from the history as it is now (the heatmap from its latest
        ``window`` stored steps, fewer where there are many sites: about :data:`HEAT_CELLS` cells,
        at least 8 steps; the charts from at most :data:`CHART_POINTS` points: the cost does not
        grow with the run)."""
        with self._drawing:
            self._seen = self.history.version
            snap = self.history.snapshot()
            at = snap.first_nonfinite()
            first = None if at is None else (int(snap.steps[at[0]]), snap.sites[at[1]])
            bad = ' class="fi-bad"' if first is not None else ""
            self.status.value = (f'<style>{CSS}</style><div class="fi-hist"><span{bad}>'
                                 f'{esc(status_line(snap))}</span></div>')
            lo = max(0, len(snap.steps) - min(self.window, max(8, HEAT_CELLS // max(1, len(snap.sites)))))
            win = Snapshot(snap.steps[lo:], snap.last[lo:], snap.sites, snap.cells[lo:])
            shown = Drawn(win, None if at is None or at[0] < lo else (at[0] - lo, at[1]), None)
            self.heat.value = f'<div class="fi-hist">{heatmap(shown, self.field.value)}</div>' \
                if len(win.steps) else '<div class="fi-hist">nothing recorded yet</div>'
            sites = snap.sites
            options = [(_site_label(s), s) for s in sites]
            self._setting = True
            try:
                if [o[1] for o in self.sites.options] != sites:
                    current = self.sites.value
                    self.sites.options = options
                    self.sites.value = current if current in sites else (sites[0] if sites else None)
                if first is not None and not self._chosen:
                    self.sites.value = first[1]
            finally:
                self._setting = False
            self._draw_charts(snap)

    def _draw_charts(self, snap: Snapshot | None = None) -> None:
        site = self.sites.value
        if site is None:
            self.charts.value = ""
            return
        snap = self.history.snapshot() if snap is None else snap
        if site not in snap.sites:
            self.charts.value = ""
            return
        k = snap.sites.index(site)
        d, j = drawn(Snapshot(snap.steps, snap.last, [site], snap.cells[:, k:k + 1]), CHART_POINTS), 0
        present = d.snap.present[:, j]
        charts = "".join(line_chart(d, j, f) for f in CHARTS
                         if f != "ratio" or bool(np.any(~np.isnan(d.snap.cells["ratio"][present, j]))))
        self.charts.value = (f'<div class="fi-hist"><div class="fi-site"><div>{esc(site)}</div>'
                             f'<div class="fi-charts" style="flex-wrap:wrap">{charts}</div></div></div>')

    def close(self) -> None:
        """Stops following the history and closes the widgets (their layouts and styles included)."""
        self._stop.set()
        for child in self.children:
            close_tree(child)
        close_parts(self)
        super().close()
