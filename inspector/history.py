"""What a watched training run recorded: per site, per step, a few scalars (plain data, no jax).

A *site* is one thing that was described at a step: a captured call's output
(``kind="activation"``, named by its key ``path:method[call]``, with ``.<leaf>`` for a
call that returned several arrays) or one leaf of the parameters, gradients or updates
(``kind`` ``"param"``, ``"grad"``, ``"update"``; named by its variable path). Sites keep the
order in which they were first recorded; within a step, activations come in execution order,
then parameters, gradients and updates.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator
from typing import Any

KINDS = ("activation", "param", "grad", "update")
FIELDS = ("mean", "std", "abs_max", "zero_frac", "nan", "inf", "norm", "ratio", "count", "applications")
"""The scalars of every :class:`Scalars`, in order (the columns of :meth:`History.to_pandas`)."""


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


@dataclasses.dataclass
class History:
    """Scalars per site and step, in the order recorded. Safe to fill from another thread
    (the runtime's callback thread) while read."""

    series: dict[Site, dict[int, Scalars]] = dataclasses.field(default_factory=dict)
    version: int = dataclasses.field(default=0, compare=False)
    """Counts the records added: a view redraws when it has changed."""
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, step: int, site: Site, scalars: Scalars) -> None:
        """Record ``scalars`` of ``site`` at ``step``; a later record of the same step is merged
        (:meth:`Scalars.merged`), never replaces."""
        with self._lock:
            by_step = self.series.setdefault(site, {})
            step = int(step)
            before = by_step.get(step)
            by_step[step] = scalars if before is None else before.merged(scalars)
            self.version += 1

    def sites(self, kind: str | None = None) -> list[Site]:
        """Every site (of ``kind``), in the order first recorded."""
        with self._lock:
            return [s for s in self.series if kind is None or s.kind == kind]

    def steps(self) -> list[int]:
        """Every step at which anything was recorded, ascending."""
        with self._lock:
            return sorted({step for by_step in self.series.values() for step in by_step})

    def site(self, key: Site | tuple[str, str] | str) -> Site:
        """The recorded site ``key`` names: a :class:`Site`, ``(kind, name)``, or a name recorded
        under one kind only (``"kind name"`` also works); a ``KeyError`` naming it otherwise."""
        if not isinstance(key, (Site, tuple, str)):
            raise TypeError(f"a history is indexed by a Site, (kind, name) or a site name, not {type(key).__name__}")
        with self._lock:
            sites = list(self.series)
        recorded = ", ".join(map(str, sites)) or "nothing"
        if isinstance(key, Site) or (isinstance(key, tuple) and len(key) == 2):
            want = key if isinstance(key, Site) else Site(*key)
            if want in sites:
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
        with self._lock:
            return dict(self.series[key])

    def __len__(self) -> int:
        return len(self.steps())

    def rows(self) -> Iterator[tuple[int, Site, Scalars]]:
        """``(step, site, scalars)`` by step, then in site order."""
        with self._lock:
            items = [(step, site, sc) for site, by_step in self.series.items() for step, sc in by_step.items()]
            order = {site: i for i, site in enumerate(self.series)}
        yield from sorted(items, key=lambda r: (r[0], order[r[1]]))

    def first_nonfinite(self) -> tuple[int, Site] | None:
        """The earliest step with a NaN or Inf anywhere, and its first such site (activations in
        execution order, then parameters, gradients, updates); ``None`` if every value was finite."""
        for step, site, sc in self.rows():
            if not sc.finite:
                return step, site
        return None

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per (step, site): ``step``, ``kind``, ``site`` and every field of :data:`FIELDS`."""
        return [{"step": step, "kind": site.kind, "site": site.name, **dataclasses.asdict(sc)}
                for step, site, sc in self.rows()]

    def to_pandas(self) -> Any:
        """A tidy ``pandas.DataFrame``: one row per (step, site), columns ``step``, ``kind``, ``site``
        and :data:`FIELDS`. Needs pandas (``pip install 'inspector[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("History.to_pandas needs pandas: pip install pandas "
                              "(or the package's 'pandas' extra)") from e
        return pd.DataFrame(self.to_records(), columns=["step", "kind", "site", *FIELDS])

    def to_text(self, fields: tuple[str, ...] = ("mean", "std", "abs_max", "zero_frac", "nan", "inf", "norm",
                                                 "ratio")) -> str:
        """A table, one line per (step, site); names pass through :func:`inspector.names.safe`."""
        from inspector.views.history_text import history_table

        return history_table(self, fields)

    def to_html(self, path: str | None = None, fields: tuple[str, ...] = ("std", "abs_max", "zero_frac")) -> str:
        """One static HTML page (SVG, no script): a line chart per site and a site x step heatmap
        of each of ``fields``; also written to ``path`` when given."""
        from inspector.views.history_html import history_html

        page = history_html(self, fields)
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
