"""A live notebook view of a watched run's :class:`~inspector.history.History`: one anywidget.

It draws what the static page draws (``static/history.js`` on uPlot, from
:func:`~inspector.views.history_html.payload`): the status line, a site x step heatmap of std,
abs max or zero fraction (the whole run, neighbouring steps merged beyond about
:data:`HEAT_CELLS` cells, opening on the first non-finite cell, else the latest steps) and the
charts of the selected site (the first non-finite one, until the user picks one), which open on
the latest ``window`` steps widened to the first non-finite step.

The training loop is never blocked: the history is filled by the runtime's callback thread, and
a daemon thread of this widget redraws at most every ``interval`` seconds, only when
:attr:`History.version` has moved. :meth:`WatchWidget.close` stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anywidget
import ipywidgets
import traitlets

from inspector.history import History, Site
from inspector.views.history_html import CHART_POINTS, CSS, ESM, payload, status_line

HEAT_CELLS = 6000
"""About how many cells of each field the live heatmap sends (steps merged beyond it)."""

__all__ = ["HEAT_CELLS", "WatchWidget", "status_line"]


class WatchWidget(anywidget.AnyWidget):
    """The live view of ``history`` (see the module docstring); :meth:`refresh` redraws now.

    Synced: ``data`` (the payload, with the selected site's series only) and ``selected`` (a site
    index; the page sets it when the user picks a site, and its charts are sent then)."""

    _esm = ESM
    _css = CSS
    data: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)

    def __init__(self, history: History, interval: float = 0.5, window: int = 120,
                 sync: Callable[[], None] | None = None, overlay: tuple[str, History] | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.add_class("fi-watch")
        self.history, self.interval, self.window = history, float(interval), int(window)
        self.overlay = overlay  # (title, history) of another run, drawn dashed in the same charts
        self._sync = sync  # brings in what is ready and not yet in the history (never waits)
        self._chosen = False  # the user picked a site: a new non-finite one no longer takes the selection
        self._setting = False  # ``selected`` is being set by a redraw, not by the user
        self._drawing = threading.Lock()
        self._seen = -1
        self.observe(self._on_selected, "selected")
        self.refresh()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="inspector-watch-view", daemon=True)
        self._thread.start()

    @property
    def status(self) -> str:
        """The status line as drawn (:func:`status_line`)."""
        return str(self.data.get("status", ""))

    @property
    def site(self) -> Site | None:
        """The site whose charts are shown."""
        sites = self.history.sites()
        return sites[self.selected] if 0 <= self.selected < len(sites) else None

    def select(self, site: Site) -> None:
        """Shows ``site``'s charts, as a pick in the page does (a later non-finite site no longer
        takes the selection)."""
        self.selected = self.history.sites().index(site)

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

    def _on_selected(self, change: dict[str, Any]) -> None:
        if self._setting:
            return
        self._chosen = True
        self.refresh()

    def refresh(self) -> None:
        """Redraws everything from the history as it is now: the heatmap of at most about
        :data:`HEAT_CELLS` cells a field and the selected site's series of at most
        :data:`~inspector.views.history_html.CHART_POINTS` points (min/max buckets beyond), so a
        redraw costs the same on a long run as on a short one."""
        with self._drawing:
            self._seen = self.history.version
            snap = self.history.snapshot()
            at = snap.first_nonfinite()
            j = self.selected
            if at is not None and not self._chosen:
                j = at[1]
            if not 0 <= j < len(snap.sites):
                j = 0 if snap.sites else -1
            other = None
            if self.overlay is not None:
                other = (self.overlay[0], self.overlay[1].snapshot())
            hists = ({j: self.history.histogram(snap.sites[j])}
                     if j >= 0 and snap.sites[j] in self.history.histogram_sites() else None)
            data = payload(snap, [j] if j >= 0 else [], cells=HEAT_CELLS, points=CHART_POINTS,
                           selected=max(j, 0), window=self.window, other=other, hists=hists)
            data["live"] = True
            self._setting = True
            try:
                with self.hold_sync():
                    self.selected = j
                    self.data = data
            finally:
                self._setting = False

    def close(self) -> None:
        """Stops following the history and closes the widget (its layout model included)."""
        self._stop.set()
        if isinstance(getattr(self, "layout", None), ipywidgets.Widget):
            self.layout.close()
        super().close()
