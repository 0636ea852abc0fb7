"""How a leaf changed: a mutated collection's leaves (:class:`LeafDiff`, :class:`CollectionDiff`) and
two inspections compared leaf by leaf (:class:`LeafDelta`, :class:`Comparison`)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from inspector.model.leaves import RECORD_STATS, Leaf, same_number
from inspector.model.vocabulary import (
    ORDERS, SECTIONS, STRUCTURAL, ComparedSection, ComparisonStatus, MutationStatus, Order,
)
from inspector.names import Path, format_path, safe

if TYPE_CHECKING:
    from inspector.model.inspection import Inspection


@dataclasses.dataclass
class CollectionDiff:
    """Before/after of one collection that ``mutable=`` let the call write."""

    name: str
    leaves: list[LeafDiff]

    def by_status(self, status: MutationStatus) -> list[LeafDiff]:
        return [d for d in self.leaves if d.status == status]

    def counts(self) -> dict[str, int]:
        """Leaves per status, in the order ``changed, added, unchanged, removed``."""
        return {s: len(self.by_status(s)) for s in ("changed", "added", "unchanged", "removed")}

    def ranked(self) -> list[LeafDiff]:
        """Leaves sorted by how much they changed, largest first (added and removed, then NaN or Inf
        changes, then by ``max|Δ|``)."""
        order = {"added": 0, "removed": 0, "changed": 1, "unchanged": 2}

        def key(d: LeafDiff) -> tuple[int, int, float]:
            nf = d.nonfinite_delta() if d.status == "changed" else None
            return order[d.status], 0 if nf is None or nf.total else 1, -d.max_abs_delta

        return sorted(self.leaves, key=key)


@dataclasses.dataclass
class LeafDelta:
    """Two aligned leaves, ``a`` then ``b``, and how they differ.

    ``max_abs``/``mean_abs``/``changed`` are element-wise, computed on the device when both
    arrays were kept with equal shapes; otherwise None (statistics only). ``changed`` counts every
    element that differs, NaN and Inf changes included; ``max_abs``/``mean_abs`` are over the
    elements where neither side is NaN (a NaN change has no magnitude: :meth:`nonfinite_delta`
    counts and names those). ``status`` says how the pair differs as a comparison;
    :class:`LeafDiff`, the same record for one call's mutation (``a`` the leaf before, ``b`` after),
    says it as a mutation.
    """

    section: str  # a ComparedSection for a comparison, the collection for a mutation
    key: str
    a: Leaf | None
    b: Leaf | None
    max_abs: float | None = None
    mean_abs: float | None = None
    changed: int | None = None
    nonfinite_changes: NonfiniteChanges | None = dataclasses.field(default=None, repr=False, compare=False)
    order: int | None = dataclasses.field(default=None, repr=False, compare=False)  # the call's, intermediates

    @property
    def equal(self) -> bool:
        """Nothing differs: element-wise equal, or (statistics only) the same statistics."""
        if self.status == "equal":
            return True
        if self.status != "statistics only" or self.a is None or self.b is None:
            return False
        sa, sb = self.a.stats, self.b.stats
        return sa is not None and sb is not None and all(
            same_number(getattr(sa, f), getattr(sb, f)) for f in RECORD_STATS)

    @property
    def status(self) -> ComparisonStatus | MutationStatus:
        if self.a is None:
            return "only in b"
        if self.b is None:
            return "only in a"
        if self.a.shape != self.b.shape or self.a.dtype != self.b.dtype:
            return "shape differs"
        if self.changed is None:
            return "statistics only"
        return "differs" if self.changed else "equal"

    @property
    def structural(self) -> bool:
        """Missing on one side, or of another shape: nothing to measure element-wise."""
        return self.status in STRUCTURAL

    def nonfinite_delta(self) -> NonfiniteChanges | None:
        """How many changed elements became NaN, stopped being NaN, or changed with an Inf on either side
        (:class:`NonfiniteChanges`), counted element-wise from both arrays the first time it is asked for
        (then kept): all zero without a NaN or Inf on either side (their statistics say so), None where it
        cannot be known (an array not kept, other shapes, no statistics)."""
        if self.nonfinite_changes is not None:
            return self.nonfinite_changes
        a, b = self.a, self.b
        if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype or not self.changed:
            return None if self.changed is None else NonfiniteChanges(0, 0, 0)
        if a.stats is not None and b.stats is not None and not a.stats.nonfinite and not b.stats.nonfinite:
            self.nonfinite_changes = NonfiniteChanges(0, 0, 0)
        elif a.handle is not None and b.handle is not None:
            from inspector import stats

            self.nonfinite_changes = NonfiniteChanges(*stats.nonfinite_delta(a.handle, b.handle))
        elif a.stats is None and b.stats is None:  # PRNG keys: no statistics, no NaN
            self.nonfinite_changes = NonfiniteChanges(0, 0, 0)
        return self.nonfinite_changes

    @property
    def finite_changed(self) -> int | None:
        """``changed`` less the NaN and Inf changes (None where either is not known)."""
        nf = self.nonfinite_delta()
        return None if self.changed is None or nf is None else self.changed - nf.total

    def _stat(self, name: str) -> float:
        if not (self.a and self.b and self.a.stats and self.b.stats):
            return 0.0
        return getattr(self.b.stats, name) - getattr(self.a.stats, name)

    @property
    def delta_mean(self) -> float:
        """Mean of ``b`` less mean of ``a`` (each over its finite elements; NaN when one has none)."""
        return self._stat("mean")

    @property
    def delta_std(self) -> float:
        return self._stat("std")

    @property
    def scale(self) -> float | None:
        """``max|a|`` over its finite elements, the unit of :attr:`relative`; None when ``a`` has no
        finite non-zero element (nothing to be relative to)."""
        s = self.a.stats if self.a is not None else None
        if s is None or not math.isfinite(s.abs_max) or s.abs_max == 0:
            return None
        return float(s.abs_max)

    @property
    def relative(self) -> float:
        """``max|b - a|`` over ``max|a|`` (or the relative change of the mean without arrays): 0 when
        nothing changed in magnitude, inf when ``a`` has nothing to be relative to (see :attr:`scale`),
        never NaN."""
        change = self.max_abs if self.max_abs is not None else abs(self.delta_mean)
        if change != change:
            return float("inf")
        if not change:
            return 0.0
        scale = self.scale
        return change / scale if scale is not None else float("inf")

    @property
    def divergence(self) -> float:
        """Sort key: structural differences and NaN/Inf changes first (inf), then the relative difference."""
        if self.structural:
            return float("inf")
        nf = self.nonfinite_delta()
        if nf is not None and nf.total:
            return float("inf")
        return self.relative


class NonfiniteChanges(tuple):
    """Changed elements whose change is not a number, by kind: ``to_nan`` (became NaN), ``from_nan``
    (stopped being NaN), ``inf`` (an Inf on either side, no NaN). A plain tuple of three ints."""

    def __new__(cls, to_nan: int, from_nan: int, inf: int) -> NonfiniteChanges:
        return super().__new__(cls, (int(to_nan), int(from_nan), int(inf)))

    @property
    def to_nan(self) -> int:
        return self[0]

    @property
    def from_nan(self) -> int:
        return self[1]

    @property
    def inf(self) -> int:
        return self[2]

    @property
    def total(self) -> int:
        return self[0] + self[1] + self[2]

    def __repr__(self) -> str:
        return f"NonfiniteChanges(to_nan={self[0]}, from_nan={self[1]}, inf={self[2]})"


class LeafDiff(LeafDelta):
    """How one call changed one leaf of a mutable collection: a :class:`LeafDelta` of the leaf
    before (``a``, also ``before``) and after (``b``, also ``after``), keyed by its path, with a
    :data:`MutationStatus`. Element-wise deltas are 0 where they were not measured."""

    def __init__(self, path: Path, status: MutationStatus, before: Leaf | None, after: Leaf | None,
                 changed: int = 0, max_abs_delta: float = 0.0, mean_abs_delta: float = 0.0):
        super().__init__(path[0] if path else "", format_path(path), before, after, max_abs_delta,
                         mean_abs_delta, changed)
        self.path = path
        self.mutation = status

    @property
    def status(self) -> MutationStatus:
        return self.mutation

    @property
    def before(self) -> Leaf | None:
        return self.a

    @property
    def after(self) -> Leaf | None:
        return self.b

    @property
    def max_abs_delta(self) -> float:
        """``max_abs`` (0 where not measured)."""
        return self.max_abs or 0.0

    @property
    def mean_abs_delta(self) -> float:
        """``mean_abs`` (0 where not measured)."""
        return self.mean_abs or 0.0

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LeafDiff) and (self.path, self.mutation) == (other.path, other.mutation)
                and super().__eq__(other))

    # mutable, as the dataclass it extends; typeshed types __hash__ as a method, not the None that unsets it
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"LeafDiff(path={self.path!r}, status={self.mutation!r}, before={self.a!r}, after={self.b!r}, "
                f"changed={self.changed!r}, max_abs_delta={self.max_abs!r}, mean_abs_delta={self.mean_abs!r})")


@dataclasses.dataclass
class Comparison:
    """Two inspections aligned leaf by leaf (``fi.compare(a, b)``)."""

    labels: tuple[str, str]
    a: Inspection
    b: Inspection
    deltas: list[LeafDelta]

    def ranked(self, section: ComparedSection | None = None) -> list[LeafDelta]:
        """Deltas of ``section`` (all by default), largest divergence first (structural differences and
        NaN/Inf changes count as largest)."""
        chosen = [d for d in self.deltas if section is None or d.section == section]
        return sorted(chosen, key=lambda d: -d.divergence)

    def in_order(self, section: ComparedSection | None = None) -> list[LeafDelta]:
        """Deltas of ``section`` (all by default, section by section) in execution order: outputs and
        variables by path, intermediates (and the calls' gradients) in call order."""
        chosen = [d for d in self.deltas if section is None or d.section == section]
        pos: dict[str, int] = {s: i for i, s in enumerate(SECTIONS)}
        return sorted(chosen, key=lambda d: (pos.get(d.section, len(SECTIONS)),
                                             -1 if d.order is None else d.order))

    def ordered(self, section: ComparedSection | None = None, order: Order = "execution") -> list[LeafDelta]:
        """:meth:`in_order` (``order='execution'``) or :meth:`ranked` (``order='size'``)."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, not {order!r}")
        return self.in_order(section) if order == "execution" else self.ranked(section)

    def first_divergence(self) -> LeafDelta | None:
        """Where ``a`` and ``b`` first differ: the first differing intermediate in execution order, else
        the first differing variable, output or gradient (by path). None when everything is equal."""
        sections: tuple[ComparedSection, ...] = ("intermediates", "variables", "output", "gradients")
        for section in sections:
            d = next((d for d in self.in_order(section) if not d.equal), None)
            if d is not None:
                return d
        return None

    def __getitem__(self, key: str) -> LeafDelta:
        for d in self.deltas:
            if d.key == key:
                return d
        raise KeyError(key)

    def to_text(self, limit: int | None = 30, order: Order = "execution") -> str:
        """Plain text: per section, the differing leaves in execution order (``order='size'``: largest
        first), the first divergence marked, the equal ones as one count line."""
        from inspector.views import display

        return display.text(self, limit=limit, order=order)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        differ = sum(1 for d in self.deltas if not d.equal)
        return safe(f"<Comparison {self.labels[0]} vs {self.labels[1]}: {differ} of {len(self.deltas)} leaves differ>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Widget view in a live kernel; static HTML and text as fallbacks (a one-line note on a
        process other than 0 of a ``jax.distributed`` job)."""
        from inspector.views import display

        return display.mimebundle(self, include, exclude)

    def __rich__(self) -> Any:
        """The rich tree (``rich.print``); a one-line note on a process other than 0."""
        from inspector.views import display

        return display.rich(self)

