"""What a watched training run recorded: per site, per step, a few scalars (plain data, no jax).

A *site* is one thing that was described at a step: a captured call's output
(``kind="activation"``, named by its key ``path:method[call]``, with ``.<leaf>`` for a
call that returned several arrays) or one leaf of the parameters, gradients or updates
(``kind`` ``"param"``, ``"grad"``, ``"update"``; named by its variable path). Sites keep the
order in which they were first recorded; within a step, activations come in execution order,
then parameters, gradients and updates.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

KINDS = ("activation", "param", "grad", "update")
FIELDS = ("mean", "std", "abs_max", "zero_frac", "nan", "inf", "norm", "ratio", "count", "applications")
"""The scalars of every :class:`Scalars`, in order (the columns of :meth:`History.to_pandas`)."""

HIST_SIDE = 32
"""Magnitude bins per sign of a histogram: powers of four, ``[2^(2k - HIST_LOW), 2^(2k + 2 - HIST_LOW))``."""
HIST_LOW = 32
"""Magnitude bin ``k`` holds ``[2^(2k - HIST_LOW), 2^(2k + 2 - HIST_LOW))``; the first also every smaller
nonzero magnitude, the last every larger one."""
HIST_BINS = 2 * HIST_SIDE + 1
"""A histogram's bins, ascending by value: negative magnitudes (largest first), exactly zero, positive."""


def hist_edges() -> np.ndarray:
    """The ``HIST_BINS + 1`` bin edges, ascending: ``-inf, -2^30, ..., -2^-30, 0, 0, 2^-30, ..., 2^30, inf``
    (the zero bin ``[0, 0]`` holds exactly 0; a magnitude bin holds ``[lo, hi)`` of its edges'
    magnitudes, the innermost everything nonzero below ``2^-30``, the outermost everything from ``2^30``)."""
    mags = 2.0 ** (2 * np.arange(1, HIST_SIDE) - HIST_LOW)  # the edges between magnitude bins
    return np.concatenate([[-np.inf], -mags[::-1], [0.0, 0.0], mags, [np.inf]])


@dataclasses.dataclass(frozen=True)
class Scalars:
    """Statistics of one array at one step. ``mean``, ``std`` (population), ``abs_max`` and ``norm``
    (L2) are over the finite elements; ``zero_frac`` is zeros / elements; ``nan`` and ``inf`` (both
    signs) are exact counts; ``ratio`` is this array's norm over its parameter's norm (gradients and
    updates, when the step handed the parameters over), else ``None``. Complex arrays: of ``|z|``.
    ``applications`` counts the records merged into this one (:meth:`merged`)."""

    mean: float
    std: float
    abs_max: float
    zero_frac: float
    nan: int
    inf: int
    norm: float
    ratio: float | None
    count: int
    applications: int = 1

    @property
    def finite(self) -> bool:
        """No NaN or Inf among the elements."""
        return self.nan == 0 and self.inf == 0

    @property
    def zeros(self) -> int:
        """The number of zero elements (``zero_frac * count``, exact below 2**53 elements)."""
        return round(self.zero_frac * self.count)

    def merged(self, other: Scalars) -> Scalars:
        """The statistics of this array and ``other`` taken together (two applications of one site
        at one step: microbatches, a scan, vmap, shards, a retried step), merged exactly in float64:
        counts add, ``abs_max`` is the larger, ``norm`` and ``ratio`` (same parameter) add in
        quadrature, ``mean`` and ``std`` by the parallel (Chan) rule over the finite elements."""
        return merge_scalars(self, other)


def merge_scalars(a: Scalars, b: Scalars) -> Scalars:
    """:meth:`Scalars.merged`."""
    count = a.count + b.count
    nan, inf = a.nan + b.nan, a.inf + b.inf
    na, nb = max(a.count - a.nan - a.inf, 0), max(b.count - b.nan - b.inf, 0)
    mean, std = merge_moments(na, a.mean, a.std, nb, b.mean, b.std)
    ratio = (a.ratio if b.ratio is None else b.ratio if a.ratio is None
             else math.hypot(a.ratio, b.ratio))
    return Scalars(mean=mean, std=std, abs_max=max(a.abs_max, b.abs_max),
                   zero_frac=(a.zeros + b.zeros) / count if count else 0.0, nan=nan, inf=inf,
                   norm=math.hypot(a.norm, b.norm), ratio=ratio, count=count,
                   applications=a.applications + b.applications)


def merge_moments(na: int, ma: float, sa: float, nb: int, mb: float, sb: float) -> tuple[float, float]:
    """``(mean, std)`` (population) of two groups of ``na`` and ``nb`` values (Chan et al.)."""
    if nb == 0:
        return (float(ma), float(sa)) if na else (0.0, 0.0)
    if na == 0:
        return float(mb), float(sb)
    n = na + nb
    delta = float(mb) - float(ma)
    mean = float(ma) + delta * (nb / n)
    m2 = float(sa) ** 2 * na + float(sb) ** 2 * nb + delta * delta * (na * nb / n)
    return mean, math.sqrt(max(m2, 0.0) / n)


@dataclasses.dataclass(frozen=True)
class Site:
    """Where a series was recorded: ``kind`` (one of :data:`KINDS`) and ``name``."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


CELL = np.dtype([("mean", "f8"), ("std", "f8"), ("abs_max", "f8"), ("zero_frac", "f8"), ("nan", "i8"),
                  ("inf", "i8"), ("norm", "f8"), ("ratio", "f8"), ("count", "i8"), ("applications", "i4")])
"""One stored record (76 bytes): a :class:`Scalars` with ``ratio`` ``NaN`` for ``None``; an
``applications`` of 0 marks a site with nothing recorded in that row."""


def _cell(sc: Scalars) -> tuple[Any, ...]:
    return (sc.mean, sc.std, sc.abs_max, sc.zero_frac, sc.nan, sc.inf, sc.norm,
            math.nan if sc.ratio is None else sc.ratio, sc.count, sc.applications)


def _scalars(c: Any) -> Scalars:
    r = float(c["ratio"])
    return Scalars(float(c["mean"]), float(c["std"]), float(c["abs_max"]), float(c["zero_frac"]), int(c["nan"]),
                   int(c["inf"]), float(c["norm"]), None if math.isnan(r) else r, int(c["count"]),
                   int(c["applications"]))


def merge_groups(cells: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rows ``starts[i]:starts[i+1]`` of ``cells`` (rows x sites, :data:`CELL`) merged, per site,
    into one row each, by the rules of :meth:`Scalars.merged` (float64; a group holding one record
    gives that record unchanged)."""
    c = cells
    here = c["applications"] > 0
    red = np.add.reduceat
    k = red(here.astype(np.int64), starts, axis=0)
    count = red(c["count"], starts, axis=0)
    n = np.where(here, c["count"] - c["nan"] - c["inf"], 0).clip(0).astype(np.float64)
    big_n = red(n, starts, axis=0)
    mean = np.divide(red(n * c["mean"], starts, axis=0), big_n, out=np.zeros_like(big_n), where=big_n > 0)
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(c))))
    dev = np.where(n > 0, c["mean"] - mean[group], 0.0)
    m2 = red(n * np.where(n > 0, c["std"], 0.0) ** 2 + n * dev * dev, starts, axis=0)
    std = np.sqrt(np.divide(m2, big_n, out=np.zeros_like(big_n), where=big_n > 0))
    zeros = red(np.where(here, np.rint(c["zero_frac"] * c["count"]), 0.0), starts, axis=0)
    top = np.fmax.reduceat(np.where(here, c["norm"], 0.0), starts, axis=0)
    safe_top = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    norm = np.where(np.isfinite(top) & (top > 0),
                    np.sqrt(red(np.where(here, c["norm"], 0.0) ** 2 / safe_top[group] ** 2, starts, axis=0))
                    * safe_top, top)
    has_r = here & ~np.isnan(c["ratio"])
    ratio = np.sqrt(red(np.where(has_r, c["ratio"], 0.0) ** 2, starts, axis=0))
    out = np.zeros(mean.shape, CELL)
    out["mean"], out["std"], out["norm"], out["count"] = mean, std, norm, count
    out["abs_max"] = np.fmax.reduceat(np.where(here, c["abs_max"], 0.0), starts, axis=0)
    out["zero_frac"] = np.divide(zeros, count, out=np.zeros(mean.shape), where=count > 0)
    out["nan"], out["inf"] = red(c["nan"], starts, axis=0), red(c["inf"], starts, axis=0)
    out["ratio"] = np.where(red(has_r.astype(np.int64), starts, axis=0) > 0, ratio, np.nan)
    out["applications"] = red(c["applications"], starts, axis=0)
    one = k == 1  # a single record: unchanged (exactly), not recomputed
    if one.any():
        rows = red(np.where(here, np.arange(len(c))[:, None], 0), starts, axis=0)
        out[one] = c[rows[one], np.nonzero(one)[1]]
    return out


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A history's stored rows at one moment, ascending by step: ``steps[i]`` to ``last[i]`` (equal
    but where older steps were merged) and ``cells[i, j]`` (:data:`CELL`) of ``sites[j]``."""

    steps: np.ndarray
    last: np.ndarray
    sites: list[Site]
    cells: np.ndarray
    _values: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @functools.cached_property
    def present(self) -> np.ndarray:
        """Where a record is stored (rows x sites)."""
        return self.cells["applications"] > 0

    @functools.cached_property
    def nonfinite(self) -> np.ndarray:
        """Where a stored record has a NaN or Inf (rows x sites)."""
        return self.present & ((self.cells["nan"] > 0) | (self.cells["inf"] > 0))

    def scalars(self, i: int, j: int) -> Scalars:
        """The record of ``sites[j]`` in row ``i``."""
        return _scalars(self.cells[i, j])

    def values(self, field: str) -> np.ndarray:
        """``field`` as float64 (rows x sites), ``NaN`` where nothing is stored."""
        if field not in self._values:
            self._values[field] = np.where(self.present, self.cells[field].astype(np.float64), np.nan)
        return self._values[field]

    def first_nonfinite(self) -> tuple[int, int] | None:
        """``(row, site index)`` of the first non-finite record, or ``None``."""
        bad = self.nonfinite
        rows = np.flatnonzero(bad.any(axis=1))
        if not len(rows):
            return None
        return int(rows[0]), int(np.argmax(bad[rows[0]]))


@dataclasses.dataclass(frozen=True)
class StepHistograms:
    """One site's histograms over steps: row ``i`` counts the finite values recorded at steps
    ``first[i]`` to ``last[i]`` (one step, or several where older steps were merged: their counts
    added) in the bins of :func:`hist_edges`. NaN and Inf are not binned (they are counted in the
    site's scalars)."""

    site: Site
    first: np.ndarray
    last: np.ndarray
    counts: np.ndarray  # (rows, HIST_BINS), int64

    @property
    def edges(self) -> np.ndarray:
        return hist_edges()

    def to_text(self) -> str:
        """One line per row: the step (``a-b`` if merged), the values' count and range of occupied
        bins, and a bar per bin from the lowest to the highest occupied bin in any row (names escaped)."""
        from inspector.views.histogram_text import histogram_table

        return histogram_table(self)

    def __str__(self) -> str:
        return self.to_text()


class _HistColumn:
    """One site's stored histograms, ascending by first step (see :meth:`History.add_histograms`)."""

    def __init__(self) -> None:
        self.first: list[int] = []
        self.last: list[int] = []
        self.counts: list[np.ndarray] = []

    def add(self, step: int, counts: np.ndarray) -> None:
        i = bisect.bisect_right(self.first, step) - 1
        if i >= 0 and self.first[i] <= step <= self.last[i]:  # the same step again (or a merged row's)
            self.counts[i] = self.counts[i] + counts
            return
        self.first.insert(i + 1, step)
        self.last.insert(i + 1, step)
        self.counts.insert(i + 1, counts.astype(np.int64, copy=True))

    def compact(self, cap: int) -> None:
        """Merges neighbouring rows pairwise, older first, until at most ``cap`` remain; the latest
        quarter of ``cap`` stays at full resolution."""
        while len(self.first) > cap:
            keep = max(1, cap // 4)
            old = len(self.first) - keep
            pairs = range(0, old - 1, 2)
            self.first = [self.first[i] for i in pairs] + self.first[old - old % 2:]
            self.last = [self.last[i + 1] for i in pairs] + self.last[old - old % 2:]
            self.counts = [self.counts[i] + self.counts[i + 1] for i in pairs] + self.counts[old - old % 2:]
            if old < 2:
                return


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
