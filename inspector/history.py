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
FIELDS = ("mean", "std", "abs_max", "zero_frac", "nan", "inf", "norm", "ratio", "count")
"""The scalars of every :class:`Scalars`, in order (the columns of :meth:`History.to_pandas`)."""


@dataclasses.dataclass(frozen=True)
class Scalars:
    """Statistics of one array at one step. ``mean``, ``std`` (population), ``abs_max`` and ``norm``
    (L2) are over the finite elements; ``zero_frac`` is zeros / elements; ``nan`` and ``inf`` (both
    signs) are exact counts; ``ratio`` is this array's norm over its parameter's norm (gradients and
    updates, when the step handed the parameters over), else ``None``. Complex arrays: of ``|z|``."""

    mean: float
    std: float
    abs_max: float
    zero_frac: float
    nan: int
    inf: int
    norm: float
    ratio: float | None
    count: int

    @property
    def finite(self) -> bool:
        """No NaN or Inf among the elements."""
        return self.nan == 0 and self.inf == 0


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
        """Record ``scalars`` of ``site`` at ``step`` (a later record of the same step replaces it)."""
        with self._lock:
            self.series.setdefault(site, {})[int(step)] = scalars
            self.version += 1

    def sites(self, kind: str | None = None) -> list[Site]:
        """Every site (of ``kind``), in the order first recorded."""
        with self._lock:
            return [s for s in self.series if kind is None or s.kind == kind]

    def steps(self) -> list[int]:
        """Every step at which anything was recorded, ascending."""
        with self._lock:
            return sorted({step for by_step in self.series.values() for step in by_step})

    def __getitem__(self, site: Site | tuple[str, str]) -> dict[int, Scalars]:
        """``{step: Scalars}`` of one site: ``history["grad", "Dense_0/kernel"]``."""
        key = site if isinstance(site, Site) else Site(*site)
        with self._lock:
            if key not in self.series:
                raise KeyError(f"no site {key}; recorded: {', '.join(map(str, self.series)) or 'nothing'}")
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
