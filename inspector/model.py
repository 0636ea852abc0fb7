"""What an inspection found: plain dataclasses, readable without jax or widgets.

An :class:`Inspection` holds the output of one flax call, the variables it read
(:class:`VariableTree`), what ``mutable=`` changed (:class:`CollectionDiff`) and the
captured intermediates (:class:`MethodCall`), each leaf described by a :class:`Leaf`
with device-computed :class:`Stats`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from inspector.names import Path, format_key, format_path, parse_key, path_matches, safe  # noqa: F401 (path_matches: re-exported)

path_str = format_path
"""``('Encoder_0', 'Dense_1')`` -> ``'Encoder_0/Dense_1'`` (the root is ``'/'``); see :mod:`inspector.names`."""

Kind = Literal["apply", "init", "init_with_output"]
"""Which flax call was inspected."""
MutationStatus = Literal["changed", "added", "unchanged", "removed"]
"""How a call changed one leaf of a mutable collection (:class:`LeafDiff`)."""
MUTATION_STATUSES: tuple[MutationStatus, ...] = ("changed", "added", "unchanged", "removed")
ComparisonStatus = Literal["only in a", "only in b", "shape differs", "statistics only", "differs", "equal"]
"""How two aligned leaves of a :class:`Comparison` differ (:class:`LeafDelta`)."""
STRUCTURAL: frozenset[str] = frozenset(("only in a", "only in b", "shape differs", "added", "removed"))
"""Statuses of a leaf that is missing on one side or changed shape: nothing to measure element-wise."""
Section = Literal["output", "variables", "intermediates", "gradients"]
"""Where a compared leaf comes from."""
SECTIONS: tuple[Section, ...] = ("output", "variables", "intermediates", "gradients")
Order = Literal["execution", "size"]
"""How a comparison lists its leaves: in execution order (the first divergence first), or largest first."""
ORDERS: tuple[Order, ...] = ("execution", "size")


@dataclasses.dataclass(frozen=True)
class Stats:
    """Statistics of one array, computed on its device.

    ``mean``/``std`` (population) and ``min``/``max``/``abs_max`` are over the finite
    elements only (exact ``int`` for integer arrays); non-finite elements are counted
    in ``nan``/``posinf``/``neginf``. ``hist`` counts finite elements in the bins
    ``hist_edges`` (equal widths spanning ``[min, max]``): all of them, or when
    ``hist_sample`` is non-zero, that many at fixed, evenly spread positions; ``hist``
    is empty until asked for where the in-call summary had none (:meth:`Leaf.full_stats`). ``of``
    names what is described when it is not the values themselves (``'|z|'`` for
    complex arrays).
    """

    count: int
    mean: float
    std: float
    min: float
    max: float
    abs_max: float
    zeros: int
    nan: int
    posinf: int
    neginf: int
    hist: tuple[int, ...] = ()
    hist_sample: int = 0
    of: str = ""
    hist_edges: tuple[float, ...] = ()
    trusted: bool = dataclasses.field(default=True, repr=False, compare=False)

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf

    @property
    def frac_zero(self) -> float:
        return self.zeros / self.count if self.count else 0.0

    @property
    def norm(self) -> float:
        """The L2 norm of the finite elements, from their count, mean and std."""
        n = self.count - self.nonfinite
        return (n * (self.std * self.std + self.mean * self.mean)) ** 0.5 if n else 0.0


@dataclasses.dataclass
class Leaf:
    """One array: where it lives, what it holds, and how to fetch it on request.

    ``value`` transfers the array to the host only when read. ``opaque`` is set
    instead of array metadata for non-array values (strings, modules, ...).
    """

    path: Path
    shape: tuple[int, ...] = ()
    dtype: str = ""
    device: str = ""
    sharding: str = ""
    stats: Stats | None = None
    opaque: str | None = None
    fetch: Callable[..., Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    shard_shape: tuple[int, ...] | None = None
    handle: Any = dataclasses.field(default=None, repr=False, compare=False)  # the device array, if kept
    histogram: Callable[[], Stats] | None = dataclasses.field(default=None, repr=False, compare=False)
    _gathered: Any = dataclasses.field(default=None, repr=False, compare=False)  # Leaf.gather's copy

    def full_stats(self) -> Stats | None:
        """The statistics with their histogram: an in-call summary has none, so it is computed
        on the device the first time it is asked for (only while the array is kept). For an array
        sharded across processes, only once :meth:`gather` has brought it here (on the host),
        so that a view on one process never starts a computation the others must join."""
        s = self.stats
        if s is not None and not s.hist and self.histogram is not None:
            if _spans_processes(self.handle):
                # on the device, every process would have to join: only from gather()'s host copy
                if self._gathered is None:
                    return s
                from inspector import stats

                self.stats = s = stats.histogram(self._gathered, s)
            else:
                self.stats = s = self.histogram()
            self.histogram = None
        return s

    @property
    def per_device_bytes(self) -> int:
        """Bytes of one shard on each device holding it (all bytes when not sharded)."""
        if self.shard_shape is None:
            return self.nbytes
        n = 1
        for d in self.shard_shape:
            n *= d
        return n * self.itemsize

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else ""

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return 0 if self.opaque is not None else n

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE.get(self.dtype, 4)

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def kept(self) -> bool:
        return self.fetch is not None

    @property
    def nonfinite(self) -> int:
        """NaN and Inf elements (0 without statistics)."""
        return self.stats.nonfinite if self.stats else 0

    @property
    def value(self) -> Any:
        """The array itself, transferred to the host now (numpy). An array sharded across
        processes (``jax.distributed``) is read from this process's shards where they hold all of
        it, else raises :class:`SpansProcessesError`: call :meth:`gather` on every process."""
        return self.preview(None)

    def preview(self, index: Any = None) -> Any:
        """``value[index]``, sliced on the device before the transfer (numpy); across processes,
        as :attr:`value` says, sliced on the host."""
        if self.fetch is None:
            raise LookupError(
                f"the value of {path_str(self.path)!r} was not kept on the device "
                "(inspected with keep='stats'); inspect again with keep='arrays' to fetch it"
            )
        if self._gathered is not None:
            return self._gathered if index is None else self._gathered[index]
        if _spans_processes(self.handle):
            # a computation on a global array (even a slice) must run on every process: read local shards
            local = _local_copy(self.handle)
            if local is None:
                raise SpansProcessesError(
                    f"{path_str(self.path)!r} is sharded across processes and this one (process "
                    f"{_process_index()}) holds only part of it: call leaf.gather() on every process "
                    "(a collective, in the same order everywhere) to fetch it here, or read this "
                    "process's part from leaf.handle.addressable_shards")
            return local if index is None else local[index]
        return self.fetch(index)

    def gather(self, timeout: float = 300.0) -> Any:
        """The whole array on this host (numpy), also for an array sharded across processes
        (``jax.distributed``), which is then kept for :attr:`value` and :meth:`preview` (the
        widget's detail pane). For such an array this is a collective: every process must call
        ``gather`` on the same leaf, in the same order; a process that waits more than ``timeout``
        seconds for the others raises ``TimeoutError`` naming the leaf, instead of hanging."""
        if self.fetch is None or not _spans_processes(self.handle):
            return self.preview(None)
        from jax._src import distributed
        from jax.experimental import multihost_utils

        key = path_str(self.path)
        client = distributed.global_state.client
        if client is not None:  # meet first, with a deadline: all-gathers of different leaves would hang
            barrier = f"inspector.gather/{next(_GATHERS)}/{key}"
            try:
                client.wait_at_barrier(barrier, max(1, int(timeout * 1000)))
            except Exception as e:  # XlaRuntimeError: DEADLINE_EXCEEDED, or a peer's failure
                raise TimeoutError(
                    f"leaf.gather() of {key!r} on process {_process_index()}: not every process called "
                    f"gather on this leaf as its gather #{barrier.split('/')[1]} within {timeout:g} s "
                    "(a collective: every process must gather the same leaves in the same order)") from e
        self._gathered = multihost_utils.process_allgather(self.handle, tiled=True)
        return self._gathered


class SpansProcessesError(LookupError):
    """``leaf.value`` of an array sharded across processes that this process holds only part of."""


_GATHERS = itertools.count()
"""Numbers this process's gathers of arrays across processes, naming the barrier each meets at."""


def _spans_processes(handle: Any) -> bool:
    """True for a jax array with shards on another process's devices."""
    return handle is not None and not getattr(handle, "is_fully_addressable", True)


def _process_index() -> int:
    import jax

    return jax.process_index()


def _local_copy(handle: Any) -> Any:
    """``handle`` assembled on the host from this process's shards, or None if they do not hold
    all of it (no computation, so nothing another process must join)."""
    import numpy as np

    if not isinstance(handle.dtype, np.dtype):  # PRNG keys: no host form
        return None
    shards: dict[tuple[tuple[int, int], ...], Any] = {}
    for shard in handle.addressable_shards:
        span = tuple(s.indices(n)[:2] for s, n in zip(shard.index, handle.shape))
        shards.setdefault(span, shard)
    if sum(math.prod(b - a for a, b in span) for span in shards) != math.prod(handle.shape):
        return None
    out = np.empty(handle.shape, handle.dtype)
    for shard in shards.values():
        out[shard.index] = np.asarray(shard.data)
    return out


_ITEMSIZE = {
    "bool": 1, "int8": 1, "uint8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
    "int32": 4, "uint32": 4, "float32": 4,
    "int64": 8, "uint64": 8, "float64": 8, "complex64": 8, "complex128": 16,
}


@dataclasses.dataclass
class Node:
    """A named level of a tree: children by name in order, or a leaf."""

    name: str
    path: Path
    children: dict[str, Node] = dataclasses.field(default_factory=dict)
    leaf: Leaf | None = None

    def leaves(self) -> Iterator[Leaf]:
        if self.leaf is not None:
            yield self.leaf
        for child in self.children.values():
            yield from child.leaves()

    def totals(self) -> tuple[int, int, int, int]:
        """``(leaves, elements, bytes, non-finite)`` below, computed once per node."""
        got = self.__dict__.get("_totals")
        if got is None:
            leaf = self.leaf
            got = (1, leaf.size, leaf.nbytes, leaf.nonfinite) if leaf else (0, 0, 0, 0)
            for child in self.children.values():
                got = tuple(a + b for a, b in zip(got, child.totals()))
            self.__dict__["_totals"] = got
        return got

    @property
    def count(self) -> int:
        """Number of leaves below."""
        return self.totals()[0]

    @property
    def size(self) -> int:
        return self.totals()[1]

    @property
    def nbytes(self) -> int:
        return self.totals()[2]

    @property
    def nonfinite(self) -> int:
        return self.totals()[3]

    def find(self, path: Sequence[str]) -> Node | None:
        node: Node | None = self
        for part in path:
            node = node.children.get(part) if node is not None else None
        return node


def tree_from_leaves(name: str, leaves: Sequence[Leaf], prefix: Path = ()) -> Node:
    """Builds a :class:`Node` tree from leaves whose paths start with ``prefix``."""
    root = Node(name, prefix)
    start = len(prefix)
    for leaf in leaves:
        node = root
        path = leaf.path
        for i in range(start, len(path)):
            children = node.children
            nxt = children.get(path[i])
            if nxt is None:
                nxt = children[path[i]] = Node(path[i], path[:i + 1])
            node = nxt
        node.leaf = leaf
    return root


@dataclasses.dataclass
class VariableTree:
    """Variable collections: collection -> module path -> leaf, sorted by name as jax flattens them.

    Made from a ``root`` :class:`Node`, or with :meth:`of_leaves` from leaves (or a function
    making them) whose tree is built the first time it is read: a warm call that nobody looks at
    builds neither the leaves nor the tree."""

    _root: Node | None = None
    _leaves: Sequence[Leaf] | Callable[[], Sequence[Leaf]] = dataclasses.field(default=(), repr=False)
    _name: str = dataclasses.field(default="variables", repr=False)

    @classmethod
    def of_leaves(cls, name: str, leaves: Sequence[Leaf] | Callable[[], Sequence[Leaf]]) -> VariableTree:
        return cls(None, leaves, name)

    @property
    def root(self) -> Node:
        if self._root is None:
            leaves = self._leaves
            self._root = tree_from_leaves(self._name, leaves() if callable(leaves) else leaves)
            self._leaves = ()
        return self._root

    @property
    def collections(self) -> dict[str, Node]:
        return self.root.children

    def __getitem__(self, collection: str) -> Node:
        return self.root.children[collection]

    def __contains__(self, collection: str) -> bool:
        return collection in self.root.children

    def leaves(self) -> Iterator[Leaf]:
        return self.root.leaves()

    @property
    def count(self) -> int:
        return self.root.count

    @property
    def size(self) -> int:
        return self.root.size

    @property
    def nbytes(self) -> int:
        return self.root.nbytes


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
class MethodCall:
    """One captured value: a method's return (or a sow'ed value) at a module path.

    ``index`` counts calls of the same ``(path, method)``; ``order`` is the position
    in execution order over the whole run. ``outputs`` are the array leaves of the
    returned value (a tuple output gives several).
    """

    path: Path
    module_type: str
    method: str
    index: int
    order: int
    outputs: list[Leaf]
    sown: bool = False
    grads: list[Leaf] | None = None  # d loss / d each floating-point output (fi.inspect_grad), by the output's path

    @property
    def key(self) -> str:
        """``'path:method[index]'`` in the key grammar of :mod:`inspector.names`."""
        return format_key(self.path, self.method, self.index)

    @property
    def nonfinite(self) -> int:
        return sum(leaf.nonfinite for leaf in self.outputs)

    @property
    def origin(self) -> Any:
        """Where this call's NaN/Inf was born (:class:`inspector.origin.Origin`: the operation, its
        source line and operands) if this is its inspection's first non-finite call, else None;
        computed on the first request by re-running the call (:mod:`inspector.origin`)."""
        from inspector.origin import origin_of

        return origin_of(self)

    @property
    def grad_nonfinite(self) -> int:
        """NaN and Inf elements in the gradients with respect to the outputs."""
        return sum(leaf.nonfinite for leaf in self.grads or ())

    def output_path(self, leaf: Leaf) -> Path:
        """Where ``leaf`` sits inside the returned value (``()`` for a returned array)."""
        return leaf.path[len(self.path) + 1:]


@dataclasses.dataclass
class BindingCall:
    """One wrapped method call during the trace, and what it touched.

    ``reads``/``writes`` map a collection to the variable names the call read or
    wrote (relative to the module, or ``other/path:name`` for another module's);
    ``rngs`` maps an RNG stream to how many keys were drawn (a missing stream falls
    back to ``params``, shown as ``dropout->params``). ``parent`` is the ``order`` of
    the enclosing call. ``traced`` is 2 for a call in the body of a lifted transform
    that flax traces twice (``nn.scan``: once for the structure of its outputs, then
    the loop that runs); only the second trace is listed.
    """

    order: int
    parent: int | None
    depth: int
    path: Path
    module_type: str
    method: str
    reads: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    writes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    rngs: dict[str, int] = dataclasses.field(default_factory=dict)
    traced: int = 1

    @property
    def key(self) -> str:
        return format_key(self.path, self.method)


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

    section: str  # a Section for a comparison, the collection for a mutation
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
            _same_number(getattr(sa, f), getattr(sb, f)) for f in _RECORD_STATS)

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

    def ranked(self, section: Section | None = None) -> list[LeafDelta]:
        """Deltas of ``section`` (all by default), largest divergence first (structural differences and
        NaN/Inf changes count as largest)."""
        chosen = [d for d in self.deltas if section is None or d.section == section]
        return sorted(chosen, key=lambda d: -d.divergence)

    def in_order(self, section: Section | None = None) -> list[LeafDelta]:
        """Deltas of ``section`` (all by default, section by section) in execution order: outputs and
        variables by path, intermediates (and the calls' gradients) in call order."""
        chosen = [d for d in self.deltas if section is None or d.section == section]
        pos: dict[str, int] = {s: i for i, s in enumerate(SECTIONS)}
        return sorted(chosen, key=lambda d: (pos.get(d.section, len(SECTIONS)),
                                             -1 if d.order is None else d.order))

    def ordered(self, section: Section | None = None, order: Order = "execution") -> list[LeafDelta]:
        """:meth:`in_order` (``order='execution'``) or :meth:`ranked` (``order='size'``)."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, not {order!r}")
        return self.in_order(section) if order == "execution" else self.ranked(section)

    def first_divergence(self) -> LeafDelta | None:
        """Where ``a`` and ``b`` first differ: the first differing intermediate in execution order, else
        the first differing variable, output or gradient (by path). None when everything is equal."""
        sections: tuple[Section, ...] = ("intermediates", "variables", "output", "gradients")
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
        from inspector.views.text import render_comparison

        return render_comparison(self, limit, order)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        differ = sum(1 for d in self.deltas if not d.equal)
        return safe(f"<Comparison {self.labels[0]} vs {self.labels[1]}: {differ} of {len(self.deltas)} leaves differ>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Widget view in a live kernel; static HTML and text as fallbacks (a one-line note on a
        process other than 0 of a ``jax.distributed`` job)."""
        from inspector.views.display import mimebundle

        return mimebundle(self, include, exclude)

    def __rich__(self) -> Any:
        """The rich tree (``rich.print``); a one-line note on a process other than 0."""
        from inspector.views.display import rich

        return rich(self)


def _parse(key: str) -> tuple[Path, str | None, int | None]:
    try:
        return parse_key(key)
    except ValueError as e:
        raise KeyError(str(e)) from None


@dataclasses.dataclass
class Timings:
    """Wall times of one inspected call, in milliseconds (trace/compile are 0 when cached)."""

    trace_ms: float = 0.0
    compile_ms: float = 0.0
    run_ms: float = 0.0
    cached: bool = False

    @property
    def total_ms(self) -> float:
        return self.trace_ms + self.compile_ms + self.run_ms


@dataclasses.dataclass(frozen=True)
class UpdateScale:
    """One parameter (or module) of a gradient inspection: the norms of its gradient and of its
    value, and their ratio, the scale of a gradient-descent update relative to the parameter
    (times the learning rate). Norms are over finite elements; ``nonfinite`` counts the others."""

    key: str
    grad_norm: float
    param_norm: float
    ratio: float
    nonfinite: int = 0


@dataclasses.dataclass(frozen=True)
class GradNorm:
    """One captured call of a gradient inspection: the norm of its output (``activation_norm``)
    and of the loss's gradient with respect to it (``grad_norm``); ``depth`` is its module path's
    length. Norms are over finite elements; ``nonfinite`` counts the gradient's others."""

    key: str
    order: int
    module_type: str
    depth: int
    activation_norm: float
    grad_norm: float
    nonfinite: int = 0


_RECORD_STATS = ("count", "mean", "std", "min", "max", "abs_max", "zeros", "nan", "posinf", "neginf")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _same_number(x: float, y: float) -> bool:
    return x == y or (x != x and y != y)


@dataclasses.dataclass
class Inspection:
    """Everything one inspected flax call produced.

    ``output`` and ``state`` are exactly what flax returned (``state`` is None when
    flax returned no tuple). ``variables`` describes the variables passed in (for
    ``init``, the ones created); ``diffs`` the mutated collections; ``calls`` the
    intermediates in execution order.
    """

    kind: Kind
    module_type: str
    output: Any
    state: Any
    outputs: list[Leaf]
    variables: VariableTree
    diffs: list[CollectionDiff]
    calls: list[MethodCall]
    device: str = ""
    timings: Timings = dataclasses.field(default_factory=Timings)
    kept: bool = True
    notes: list[str] = dataclasses.field(default_factory=list)
    binding: list[BindingCall] = dataclasses.field(default_factory=list)
    subnormals_as_zero: bool = False  # the device reads subnormal floats as 0, and so do the statistics
    grads: VariableTree | None = None  # d loss / d params (fi.inspect_grad)
    loss: float | None = None  # the loss that ``grads`` differentiate (fi.inspect_grad)

    # -- lookup -------------------------------------------------------------
    def __getitem__(self, key: str) -> Leaf:
        """A leaf by key (:mod:`inspector.names`): ``'params/Dense_0/kernel'``, ``'Dense_0:__call__'``,
        ``'Dense_0:__call__[1]'`` (call index), ``'output'`` or ``'output/<path>'``. A name holding
        ``/ : [ ] \\`` is written with a backslash before it (``'enc\\:dec:__call__'``)."""
        path, method, index = _parse(key)
        if method is not None:
            call = self.call(key)
            if len(call.outputs) != 1:
                raise KeyError(safe(f"{call.key} returned {len(call.outputs)} arrays; see .outputs"))
            return call.outputs[0]
        if path == ("output",):
            if len(self.outputs) != 1:
                raise KeyError(f"the output has {len(self.outputs)} leaves; use 'output/<i>'")
            return self.outputs[0]
        if path[:1] == ("output",):
            for leaf in self.outputs:
                if leaf.path == path[1:]:
                    return leaf
        node = self.variables.root.find(path)
        if node is None or node.leaf is None:
            collections = ", ".join(map(format_path, ((c,) for c in self.variables.collections)))
            raise KeyError(f"no variable {key!r}; collections: {collections}")
        return node.leaf

    def call(self, key: str) -> MethodCall:
        """The :class:`MethodCall` keyed ``'path:method'`` or ``'path:method[i]'`` (:attr:`MethodCall.key`)."""
        path, method, index = _parse(key)
        if method is None:
            raise KeyError(f"{key!r} is not of the form 'path:method[index]'")
        index = index or 0
        for call in self.calls:
            if call.path == path and call.method == method and call.index == index:
                return call
        raise KeyError(f"no captured call {key!r}; captured: {', '.join(c.key for c in self.calls[:8])}")

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per described leaf: ``section`` ('output', 'variables', 'intermediates',
        'gradients', 'activation gradients'), ``key`` and ``part`` (the leaf inside a returned
        value, ``''`` for an array), ``order`` (execution order of a call, else ``None``), ``shape``,
        ``dtype``, ``size``, ``nbytes``, ``device`` and every statistic (``None`` where there are none)."""
        rows: list[dict[str, Any]] = []

        def add(section: str, key: str, leaf: Leaf, part: Path = (), order: int | None = None) -> None:
            if leaf.opaque is not None:
                return
            s = leaf.stats
            stats = {name: getattr(s, name) if s is not None else None for name in _RECORD_STATS}
            rows.append({"section": section, "key": key, "part": format_path(part), "order": order,
                         "shape": leaf.shape, "dtype": leaf.dtype, "size": leaf.size, "nbytes": leaf.nbytes,
                         "device": leaf.device, **stats,
                         "zero_frac": s.frac_zero if s is not None else None,
                         "nonfinite": s.nonfinite if s is not None else None})

        for leaf in self.outputs:
            add("output", format_path(("output",) + leaf.path) if leaf.path else "output", leaf)
        for leaf in self.variables.leaves():
            add("variables", format_path(leaf.path), leaf)
        for call in self.calls:
            for leaf in call.outputs:
                add("intermediates", call.key, leaf, call.output_path(leaf), call.order)
        if self.grads is not None:
            for leaf in self.grads.leaves():
                add("gradients", format_path(leaf.path), leaf)
            for call in self.calls:
                for leaf in call.grads or ():
                    add("activation gradients", call.key, leaf, call.output_path(leaf), call.order)
        return rows

    def to_pandas(self) -> Any:
        """:meth:`to_records` as a ``pandas.DataFrame``, one row per leaf. Needs pandas
        (``pip install pandas``, or the package's 'pandas' extra). ``min``, ``max`` and ``abs_max``
        are exact: a column holding an integer that float64 would round is of ``object`` dtype."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Inspection.to_pandas needs pandas: pip install pandas "
                              "(or the package's 'pandas' extra)") from e
        records = self.to_records()
        frame = pd.DataFrame(records)
        for name in ("min", "max", "abs_max"):
            values = [r[name] for r in records]
            if any(type(v) is int and float(v) != v for v in values):  # int64/uint64 beyond 2**53
                frame[name] = pd.Series(values, index=frame.index, dtype=object)
        return frame

    def first_nonfinite(self) -> MethodCall | None:
        """The earliest captured call (in execution order) whose output has a NaN or Inf."""
        return next((c for c in self.calls if c.nonfinite), None)

    def nonfinite_origin(self) -> Any:
        """The origin of the first NaN/Inf (``self.first_nonfinite().origin``): None if every value
        is finite (see :attr:`MethodCall.origin`)."""
        from inspector.origin import nonfinite_origin

        return nonfinite_origin(self)

    def costs(self, memory: bool = True) -> Any:
        """Per-module cost (:class:`inspector.costs.Costs`): FLOPs, transcendentals, bytes accessed, output
        bytes and parameters per call and per module subtree, and the compiled program's memory
        (``memory=False``: not compiled). Computed on the first request by re-tracing the flax call on its
        inputs' shapes, then cached here (see :mod:`inspector.costs` for the attribution rule)."""
        from inspector.costs import inspection_costs

        return inspection_costs(self, memory)

    # -- gradients (fi.inspect_grad) ------------------------------------------
    def grad(self, key: str) -> Leaf:
        """A gradient by key: ``'params/Dense_0/kernel'`` (d loss / d that parameter) or
        ``'Dense_0:__call__[1]'`` (d loss / d that call's output)."""
        if self.grads is None:
            raise KeyError("no gradients: inspect with fi.inspect_grad")
        path, method, _ = _parse(key)
        if method is not None:
            call = self.call(key)
            if not call.grads or len(call.grads) != 1:
                raise KeyError(safe(f"{call.key} has {len(call.grads or ())} gradients; see .grads"))
            return call.grads[0]
        node = self.grads.root.find(path)
        if node is None or node.leaf is None:
            raise KeyError(safe(f"no gradient {key!r}"))
        return node.leaf

    def first_nonfinite_grad(self) -> MethodCall | None:
        """In backward order (the reverse of execution), the first captured call whose incoming
        gradient (d loss / d its output) has a NaN or Inf. Every later call's is finite, so the NaN
        was born in the backward pass of what ran between this call and the next captured one."""
        return next((c for c in reversed(self.calls) if c.grad_nonfinite), None)

    def update_scales(self, by: Literal["leaf", "module"] = "leaf") -> list[UpdateScale]:
        """Per parameter (``by='module'``: per module path), ``|grad| / |param|``, largest first: those
        with a NaN or Inf in their gradient before all, and all-zero parameters (a ratio of inf) last."""
        if self.grads is None:
            return []
        groups: dict[Path, list[tuple[Leaf, Leaf | None]]] = {}
        for g in self.grads.leaves():
            node = self.variables.root.find(g.path)
            groups.setdefault(g.path if by == "leaf" else g.path[:-1], []).append((g, node.leaf if node else None))
        out = []
        for path, pairs in groups.items():
            gn = sum(g.stats.norm ** 2 for g, _ in pairs if g.stats) ** 0.5
            pn = sum(p.stats.norm ** 2 for _, p in pairs if p is not None and p.stats) ** 0.5
            ratio = gn / pn if pn else (float("inf") if gn else 0.0)
            out.append(UpdateScale(format_path(path), gn, pn, ratio, sum(g.nonfinite for g, _ in pairs)))
        return sorted(out, key=lambda u: (-u.nonfinite, math.isinf(u.ratio), -u.ratio if u.ratio == u.ratio else 0.0))

    def grad_norms(self) -> list[GradNorm]:
        """Each captured call with gradients, in execution order: the norms of its output and of the
        gradient with respect to it (vanishing or exploding gradients read down this list)."""
        out = []
        for c in self.calls:
            if not c.grads:
                continue
            at = {leaf.path for leaf in c.grads}
            act = sum(leaf.stats.norm ** 2 for leaf in c.outputs if leaf.path in at and leaf.stats) ** 0.5
            grad = sum(leaf.stats.norm ** 2 for leaf in c.grads if leaf.stats) ** 0.5
            out.append(GradNorm(c.key, c.order, c.module_type, len(c.path), act, grad, c.grad_nonfinite))
        return out

    # -- rendering ----------------------------------------------------------
    def to_text(self, **kwargs: Any) -> str:
        """Plain-text rendering (the golden oracle of every view)."""
        from inspector.views.text import render

        return render(self, **kwargs)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return safe(
            f"<Inspection {self.kind} {self.module_type}: {_plural(self.variables.count, 'variable')}, "
            f"{_plural(len(self.diffs), 'mutated collection')}, {_plural(len(self.calls), 'captured call')}>"
        )

    def to_html(self, path: Any = None) -> str:
        """Self-contained offline HTML; written to ``path`` when given. Returns the HTML."""
        from inspector.views.html import export

        return export(self, path)

    def widget(self) -> Any:
        """The interactive ipywidgets view of this inspection."""
        from inspector.views.widgets import InspectionWidget

        return InspectionWidget(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Widget view in a live kernel; bounded static HTML and text as fallbacks (a one-line note
        on a process other than 0 of a ``jax.distributed`` job)."""
        from inspector.views.display import mimebundle

        return mimebundle(self, include, exclude)

    def __rich__(self) -> Any:
        """The rich tree (``rich.print``); a one-line note on a process other than 0."""
        from inspector.views.display import rich

        return rich(self)
