"""The cells of a watched run's :class:`~inspector.history.History` (plain data, no jax): one site's
scalars at a step (:class:`Scalars`, exactly mergeable), the :class:`Site` they describe, their stored
record (:data:`CELL`), a read-only :class:`Snapshot` of the stored rows, and histograms per step
(:class:`StepHistograms`, bins :func:`hist_edges`)."""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
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
