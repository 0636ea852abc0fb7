"""One described array (:class:`Leaf` with its :class:`Stats`) and the trees of them
(:class:`Node`, :class:`VariableTree`)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from inspector.names import format_path
from inspector.names import Path


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


class Later:
    """A value made the first time it is read: a :class:`Leaf`'s ``handle`` given as ``Later(make)`` is
    ``make()`` from its first read on. A copy or a pickle holds the value itself."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self.make(), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_made, (self.make(),))


def _made(value: Any) -> Any:
    return value


class _Handle:
    """:attr:`Leaf.handle`: the value given, or made on first read where a :class:`Later` was given."""

    def __get__(self, leaf: Any, owner: Any = None) -> Any:
        if leaf is None:
            return None
        v = leaf.__dict__.get("_handle")
        if type(v) is Later:
            v = leaf.__dict__["_handle"] = v.make()
        return v

    def __set__(self, leaf: Any, value: Any) -> None:
        leaf.__dict__["_handle"] = None if value is self else value


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
    handle: Any = dataclasses.field(default=_Handle(), repr=False, compare=False)  # the device array, if kept
    histogram: Callable[[], Stats] | None = dataclasses.field(default=None, repr=False, compare=False)
    _gathered: Any = dataclasses.field(default=None, repr=False, compare=False)  # Leaf.gather's copy

    def full_stats(self) -> Stats | None:
        """The statistics with their histogram: an in-call summary has none, so it is computed
        on the device the first time it is asked for (only while the array is kept). For an array
        sharded across processes, only once :meth:`gather` has brought it here (on the host),
        so that a view on one process never starts a computation the others must join."""
        s = self.stats
        if s is not None and not s.hist and self.histogram is not None:
            if self._spans_processes():
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

    def _spans_processes(self) -> bool:
        """Whether the array is sharded across processes (one made later never is: it is one device's)."""
        held = self.__dict__.get("_handle")
        return type(held) is not Later and _spans_processes(held)

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
                f"the value of {format_path(self.path)!r} was not kept on the device "
                "(inspected with keep='stats'); inspect again with keep='arrays' to fetch it"
            )
        if self._gathered is not None:
            return self._gathered if index is None else self._gathered[index]
        if self._spans_processes():
            # a computation on a global array (even a slice) must run on every process: read local shards
            local = _local_copy(self.handle)
            if local is None:
                raise SpansProcessesError(
                    f"{format_path(self.path)!r} is sharded across processes and this one (process "
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
        if self.fetch is None or not self._spans_processes():
            return self.preview(None)
        from jax._src import distributed
        from jax.experimental import multihost_utils

        key = format_path(self.path)
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


RECORD_STATS = ("count", "mean", "std", "min", "max", "abs_max", "zeros", "nan", "posinf", "neginf")
"""The :class:`Stats` fields a record lists (:meth:`~inspector.model.Inspection.to_records`) and a
comparison holds equal."""


def same_number(x: float, y: float) -> bool:
    """Equal, or both NaN."""
    return x == y or (x != x and y != y)
