"""What a watched training run recorded: per site, per step, a few scalars (plain data, no jax).

A *site* is one thing that was described at a step: a captured call's output
(``kind="activation"``, named by its key ``path:method[call]``, with ``.<leaf>`` for a
call that returned several arrays) or one leaf of the parameters, gradients or updates
(``kind`` ``"param"``, ``"grad"``, ``"update"``; named by its variable path). Sites keep the
order in which they were first recorded; within a step, activations come in execution order,
then parameters, gradients and updates.

This module is the store (:class:`History`); the cells it holds and hands out (:class:`Scalars`,
:class:`Site`, :class:`Snapshot`, :class:`StepHistograms`, :data:`CELL`, the ``HIST_*`` bins) live in
:mod:`inspector.history_cells` and are re-exported here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from inspector.history_cells import (CELL, FIELDS, HIST_BINS, HIST_LOW, HIST_SIDE, KINDS, Scalars, Site, Snapshot,
                                     StepHistograms, _cell, _HistColumn, _scalars, hist_edges, merge_groups,
                                     merge_moments, merge_scalars)

__all__ = ["History", "value", "KINDS", "FIELDS", "HIST_SIDE", "HIST_LOW", "HIST_BINS", "hist_edges", "Scalars",
           "merge_scalars", "merge_moments", "Site", "CELL", "merge_groups", "Snapshot", "StepHistograms"]


class History:
    """Scalars per site and step, in the order recorded, in bounded memory. Safe to fill from
    another thread (the runtime's callback thread) while read.

    Stored as one row per step and a 76-byte record per site (:data:`CELL`). A second record of a
    (step, site) is merged into the first (:meth:`Scalars.merged`). When more than ``max_records``
    records (rows x sites) would be stored, older rows are merged pairwise by the same exact rule
    (a row then covers steps ``step`` to ``last``, ``applications`` counting its records), keeping
    at full resolution the latest ``window`` steps (at most a quarter of the budget) and the
    earliest steps holding a NaN or Inf (up to an eighth of the budget: :meth:`first_nonfinite`
    stays exact; later non-finite steps are merged, their NaN and Inf counts kept). A merged row
    keeps its steps' ``abs_max`` (the largest), NaN, Inf and zero counts; ``mean``, ``std``,
    ``norm`` are those of all its elements together. The default budget, 90,000 records, is
    about 7 MB."""

    def __init__(self, max_records: int = 90_000, window: int = 1_000, max_histograms: int = 8_192):
        if int(max_records) < 1 or int(window) < 1 or int(max_histograms) < 1:
            raise ValueError(f"max_records, window and max_histograms must be positive, not {max_records!r}, "
                             f"{window!r}, {max_histograms!r}")
        self.max_records, self.window, self.max_histograms = int(max_records), int(window), int(max_histograms)
        self._hists: dict[Site, _HistColumn] = {}
        self.version = 0
        """Counts the records added: a view redraws when it has changed."""
        self._lock = threading.Lock()
        self._sites: list[Site] = []
        self._col: dict[Site, int] = {}
        self._cells = np.zeros((0, 0), CELL)
        self._first = np.zeros(0, np.int64)
        self._last = np.zeros(0, np.int64)
        self._width = np.zeros(0, np.int64)  # how many steps a row merges
        self._rows = 0
        self._row_of: dict[int, int] = {}  # first step of a row -> row
        self._merged_upto = -(2**62)  # rows up to this step may cover several steps
        self._pending: list[tuple[int, int, Scalars]] = []  # added, not yet written into the rows
        self._by_tuple: dict[int, tuple[tuple[Site, ...], np.ndarray]] = {}  # add_many's columns

    # -- filling -------------------------------------------------------------------
    def add(self, step: int, site: Site, scalars: Scalars) -> None:
        """Record ``scalars`` of ``site`` at ``step``; a later record of the same step is merged
        (:meth:`Scalars.merged`), never replaces."""
        step = int(step)
        with self._lock:
            j = self._col.get(site)
            if j is None:
                j = self._add_site(site)
            i = self._row_for(step)
            self._pending.append((i, j, scalars))
            if len(self._pending) >= 4096:
                self._flush()
            self.version += 1

    def add_many(self, step: int, sites: tuple[Site, ...], cells: np.ndarray) -> None:
        """Record ``cells[k]`` (:data:`CELL`) of ``sites[k]`` at ``step``, as :meth:`add` does one by
        one (a site already recorded at ``step`` is merged), in about the time of one :meth:`add`.
        ``sites`` holds each site once; pass the same tuple object again to skip looking them up."""
        step = int(step)
        with self._lock:
            known = self._by_tuple.get(id(sites))
            if known is None or known[0] is not sites:
                cols = np.array([self._col[s] if s in self._col else self._add_site(s) for s in sites], np.int64)
                if len(set(cols.tolist())) != len(cols):
                    raise ValueError("History.add_many: a site is listed twice")
                if len(self._by_tuple) > 64:
                    self._by_tuple.clear()
                self._by_tuple[id(sites)] = known = (sites, cols)
            cols = known[1]
            i = self._row_for(step)
            self._flush()
            fresh = self._cells["applications"][i, cols] == 0
            self._cells[i, cols[fresh]] = cells[fresh]
            if not fresh.all():  # merged into the records already there
                old = cols[~fresh]
                both = np.stack([self._cells[i, old], cells[~fresh]])
                self._cells[i, old] = merge_groups(both, np.zeros(1, np.int64))[0]
            self.version += len(sites)

    def add_histograms(self, step: int, sites: tuple[Site, ...], counts: np.ndarray) -> None:
        """Record ``counts[k]`` (``HIST_BINS`` exact counts, :func:`hist_edges`) of ``sites[k]`` at
        ``step``; a second histogram of a (step, site) is added to the first. At most about
        ``max_histograms`` rows are kept over all sites (at least 16 per site, 520 bytes each): beyond
        that, a site's older rows are merged pairwise (counts added), its latest ones kept."""
        step = int(step)
        counts = np.asarray(counts, np.int64)
        if counts.shape != (len(sites), HIST_BINS):
            raise ValueError(f"History.add_histograms: counts of shape {counts.shape}, expected "
                             f"({len(sites)}, {HIST_BINS})")
        with self._lock:
            for site, c in zip(sites, counts):
                if site not in self._col:
                    self._add_site(site)
                self._hists.setdefault(site, _HistColumn()).add(step, c)
            cap = max(16, self.max_histograms // max(1, len(self._hists)))
            for site in sites:
                if len(self._hists[site].first) > cap:
                    self._hists[site].compact(cap)
            self.version += len(sites)

    def histogram(self, site: Site | tuple[str, str] | str) -> StepHistograms:
        """The histograms over steps of one site (see :meth:`site`); recorded by
        ``fi.watch(..., histograms=True)``, a ``KeyError`` saying so for a site without them."""
        key = self.site(site)
        with self._lock:
            col = self._hists.get(key)
            if col is None:
                raise KeyError(f"no histograms of {key}: fi.watch(..., histograms=True) records them"
                               + (f" (recorded for: {', '.join(map(str, self._hists))})" if self._hists else ""))
            return StepHistograms(key, np.array(col.first, np.int64), np.array(col.last, np.int64),
                                  np.stack(col.counts) if col.counts else np.zeros((0, HIST_BINS), np.int64))

    def histogram_sites(self) -> list[Site]:
        """The sites with histograms, in the order first recorded."""
        with self._lock:
            return [s for s in self._sites if s in self._hists]

    def _row_for(self, step: int) -> int:
        """The row that holds ``step``, added (after compacting, at the budget) if there is none."""
        i = self._find(step)
        if i is None and self._rows >= self._max_rows() and self._compact():
            i = self._find(step)
        return self._add_row(step) if i is None else i

    def _flush(self) -> None:
        """Writes the records added since the last flush into the rows (callers hold the lock)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        i = np.fromiter((p[0] for p in pending), np.int64, len(pending))
        j = np.fromiter((p[1] for p in pending), np.int64, len(pending))
        recs = np.array([_cell(p[2]) for p in pending], CELL)
        key = i * len(self._sites) + j
        _, where, counts = np.unique(key, return_index=True, return_counts=True)
        alone = np.zeros(len(pending), bool)
        alone[where[counts == 1]] = True
        alone &= self._cells["applications"][i, j] == 0
        self._cells[i[alone], j[alone]] = recs[alone]
        for k in np.flatnonzero(~alone):  # merged into a record already there, in the order added
            c = self._cells[i[k], j[k]]
            sc = pending[k][2]
            self._cells[i[k], j[k]] = _cell(sc if c["applications"] == 0 else _scalars(c).merged(sc))

    def _max_rows(self) -> int:
        return max(8, self.max_records // max(1, len(self._sites)))

    def _add_site(self, site: Site) -> int:
        self._flush()
        cap = max(8, self.max_records // (len(self._sites) + 1))
        while self._rows > cap and self._compact(cap):
            pass
        self._sites.append(site)
        self._col[site] = j = len(self._sites) - 1
        cells = np.zeros((max(self._rows, min(len(self._cells), cap + 1)), len(self._sites)), CELL)
        cells[: self._rows, :j] = self._cells[: self._rows]
        self._cells = cells
        return j

    def _find(self, step: int) -> int | None:
        i = self._row_of.get(step)
        return self._covering(step) if i is None and step <= self._merged_upto else i

    def _add_row(self, step: int) -> int:
        if self._rows == len(self._cells):
            cap = max(self._rows + 1, min(max(16, 2 * self._rows), self._max_rows() + 1))
            for name in ("_cells", "_first", "_last", "_width"):
                old = getattr(self, name)
                new = np.zeros((cap, *old.shape[1:]), old.dtype)
                new[: self._rows] = old[: self._rows]
                setattr(self, name, new)
        i = self._rows
        self._first[i] = self._last[i] = step
        self._width[i] = 1
        self._cells[i] = np.zeros(len(self._sites), CELL)
        self._row_of[step] = i
        self._rows += 1
        return i

    def _covering(self, step: int) -> int | None:
        """The merged row whose steps include ``step``, if any."""
        first, last = self._first[: self._rows], self._last[: self._rows]
        hit = np.flatnonzero((first <= step) & (last >= step))
        return int(hit[0]) if len(hit) else None

    def _compact(self, cap: int | None = None) -> bool:
        """Merges older rows (see the class docstring) until at most three quarters of the rows
        are left, in passes that pair neighbours of at most 2, 4, 8, ... steps together (so the
        older steps end up in buckets of about the same width); whether any row was merged."""
        self._flush()
        r, cap = self._rows, self._max_rows() if cap is None else cap
        order = np.argsort(self._first[:r], kind="stable")
        first, last, width = self._first[order], self._last[order], self._width[order]
        cells = self._cells[:r][order]
        keep = np.zeros(r, bool)
        keep[max(0, r - min(self.window, max(1, cap // 4))):] = True
        bad = ((cells["nan"] > 0) | (cells["inf"] > 0)).any(axis=1)
        keep[np.flatnonzero(bad)[: max(1, cap // 8)]] = True  # with their neighbours: at most a quarter
        limit, merged_any = 2, False
        while len(first) > cap * 3 // 4 and limit <= 2 * max(2, int(width.max())):
            starts, i, n = [], 0, len(first)
            while i < n:  # pairs of neighbours, neither kept at full resolution, within the width limit
                starts.append(i)
                i += 2 if (i + 1 < n and not keep[i] and not keep[i + 1]
                           and width[i] + width[i + 1] <= limit) else 1
            if len(starts) < n:
                s_ = np.asarray(starts)
                cells, first = merge_groups(cells, s_), first[s_]
                last, width = np.maximum.reduceat(last, s_), np.add.reduceat(width, s_)
                keep = np.logical_or.reduceat(keep, s_)
                merged_any = True
            limit *= 2
        if not merged_any:
            return False
        n = len(first)
        size = max(n, min(len(self._cells), cap + 1))
        self._cells = np.zeros((size, cells.shape[1]), CELL)
        self._first, self._last, self._width = (np.zeros(size, np.int64) for _ in range(3))
        self._cells[:n], self._first[:n], self._last[:n], self._width[:n] = cells, first, last, width
        self._rows = n
        self._row_of = {int(f): k for k, f in enumerate(first)}
        wide = last > first
        if wide.any():
            self._merged_upto = max(self._merged_upto, int(last[wide].max()))
        return True

    # -- reading -------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """A copy of the stored rows, ascending by step (what the views draw)."""
        with self._lock:
            self._flush()
            r = self._rows
            order = np.argsort(self._first[:r], kind="stable")
            return Snapshot(self._first[order], self._last[order], list(self._sites), self._cells[:r][order])

    @property
    def stored(self) -> int:
        """How many records the history holds now (rows x sites), at most about ``max_records``."""
        with self._lock:
            return self._rows * len(self._sites)

    @property
    def series(self) -> dict[Site, dict[int, Scalars]]:
        """``{site: {step: Scalars}}`` (a copy; ``history[site]`` reads one site)."""
        snap = self.snapshot()
        return {site: self._column(snap, j) for j, site in enumerate(snap.sites)}

    @staticmethod
    def _column(snap: Snapshot, j: int) -> dict[int, Scalars]:
        return {int(snap.steps[i]): snap.scalars(int(i), j) for i in np.flatnonzero(snap.present[:, j])}

    def sites(self, kind: str | None = None) -> list[Site]:
        """Every site (of ``kind``), in the order first recorded."""
        with self._lock:
            return [s for s in self._sites if kind is None or s.kind == kind]

    def steps(self) -> list[int]:
        """Every step at which anything is stored, ascending (the first step of a merged row)."""
        snap = self.snapshot()
        return [int(s) for s in snap.steps[snap.present.any(axis=1)]]

    def site(self, key: Site | tuple[str, str] | str) -> Site:
        """The recorded site ``key`` names: a :class:`Site`, ``(kind, name)``, or a name recorded
        under one kind only (``"kind name"`` also works); a ``KeyError`` naming it otherwise."""
        if not isinstance(key, (Site, tuple, str)):
            raise TypeError(f"a history is indexed by a Site, (kind, name) or a site name, not {type(key).__name__}")
        sites = self.sites()
        recorded = ", ".join(map(str, sites)) or "nothing"
        if isinstance(key, Site) or (isinstance(key, tuple) and len(key) == 2):
            want = key if isinstance(key, Site) else Site(*key)
            if want in self._col:
                return want
            raise KeyError(f"no site {want}; recorded: {recorded}")
        if isinstance(key, str):
            found = [s for s in sites if s.name == key] or [s for s in sites if str(s) == key]
            if len(found) == 1:
                return found[0]
            if found:
                raise KeyError(f"site name {key!r} is recorded under several kinds ("
                               f"{', '.join(s.kind for s in found)}): ask for (kind, name)")
            raise KeyError(f"no site {key!r}; recorded: {recorded}")
        raise KeyError(f"no site {key!r}: ask for a Site, (kind, name) or a site name; recorded: {recorded}")

    def __getitem__(self, site: Site | tuple[str, str] | str) -> dict[int, Scalars]:
        """``{step: Scalars}`` of one site: ``history["grad", "Dense_0/kernel"]`` (see :meth:`site`)."""
        key = self.site(site)
        snap = self.snapshot()
        return self._column(snap, snap.sites.index(key))

    def __len__(self) -> int:
        return len(self.steps())

    def rows(self) -> Iterator[tuple[int, Site, Scalars]]:
        """``(step, site, scalars)`` of every stored record, by step, then in site order."""
        snap = self.snapshot()
        for i, j in zip(*np.nonzero(snap.present)):
            yield int(snap.steps[i]), snap.sites[j], snap.scalars(int(i), int(j))

    def first_nonfinite(self) -> tuple[int, Site] | None:
        """The earliest step with a NaN or Inf anywhere, and its first such site (activations in
        execution order, then parameters, gradients, updates); ``None`` if every value was finite."""
        snap = self.snapshot()
        at = snap.first_nonfinite()
        return None if at is None else (int(snap.steps[at[0]]), snap.sites[at[1]])

    def _columns(self) -> dict[str, Any]:
        snap = self.snapshot()
        i, j = np.nonzero(snap.present)
        c = snap.cells[i, j]
        cols: dict[str, Any] = {"step": snap.steps[i], "kind": np.array([s.kind for s in snap.sites], object)[j],
                                "site": np.array([s.name for s in snap.sites], object)[j]}
        cols.update({f: np.ascontiguousarray(c[f]) for f in FIELDS})
        cols["last_step"] = snap.last[i]
        return cols

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per stored (step, site): ``step``, ``kind``, ``site``, every field of :data:`FIELDS`
        and ``last_step`` (the last step a merged row covers; ``step`` at full resolution)."""
        cols = self._columns()
        names = list(cols)
        lists = [cols[k].tolist() for k in names]
        out = [dict(zip(names, row)) for row in zip(*lists)]
        for rec in out:
            if math.isnan(rec["ratio"]):
                rec["ratio"] = None
        return out

    def to_pandas(self) -> Any:
        """A tidy ``pandas.DataFrame``: one row per stored (step, site), columns ``step``, ``kind``,
        ``site``, :data:`FIELDS` and ``last_step`` (``ratio`` ``NaN`` where there is none). Needs
        pandas (``pip install 'inspector[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("History.to_pandas needs pandas: pip install pandas "
                              "(or the package's 'pandas' extra)") from e
        return pd.DataFrame(self._columns())

    def to_text(self, fields: tuple[str, ...] = ("mean", "std", "abs_max", "zero_frac", "nan", "inf", "norm",
                                                 "ratio"), limit: int = 2000) -> str:
        """A table, one line per stored (step, site); names pass through :func:`inspector.names.safe`.
        Beyond ``limit`` lines: the first and latest lines and the first non-finite ones, with a
        line saying how many were left out between them."""
        from inspector.views.history_text import history_table

        return history_table(self, fields, limit)

    def to_html(self, path: str | None = None, fields: tuple[str, ...] = ("std", "abs_max", "zero_frac"),
                other: History | None = None, other_title: str = "other run", title: str = "Watched training") -> str:
        """One self-contained HTML page (uPlot and the page's script inlined, the data embedded; it
        works offline, from a file): the status line, a site x step heatmap of ``fields`` and each
        site's charts with axes, log scale, zoom and hover, the histograms over steps where recorded;
        with ``other``, that run's charts of the same sites overlaid (dashed). A long run is drawn
        with neighbouring steps merged (min and max kept, every non-finite step marked), and charts
        are embedded for as many sites as keep the page under about a megabyte (the page says how
        many). Also written to ``path`` when given."""
        from inspector.views.history_html import history_html

        page = history_html(self, fields, title=title, other=other, other_title=other_title)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(page)
        return page

    def __str__(self) -> str:
        return self.to_text()


def value(scalars: Scalars, field: str) -> float | None:
    """One field as a float (``None`` where missing or not a number)."""
    v = getattr(scalars, field)
    if v is None:
        return None
    v = float(v)
    return v if not math.isnan(v) else None
