"""What a watched step records and how the records reach the history: the sites and arrays a step
hands over (:func:`_leaves`, :func:`_captured` in execution order from :class:`_Order`), what one emit
records (:class:`_Emit`), the records a recording step returns with its outputs (:class:`_Recording`,
:class:`_Records`), and which device's copy of a ``shard_map`` block is recorded (:func:`_device_keep`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inspector._compat import current_trace, staged_in
from inspector.capture import public_method, recorded_call
from inspector.history import CELL, HIST_BINS, History, Scalars, Site
from inspector.names import format_key, format_path
from inspector import stats


def _is_int(x: Any) -> bool:
    return bool(jnp.issubdtype(x.dtype, jnp.integer))


def _scalars(row: np.ndarray, count: int, ratio: float | None, abs_max: int | None = None) -> Scalars:
    """One site's :class:`Scalars` from its row; ``abs_max`` (an int) replaces the row's for integer arrays."""
    mean, std, amax, zeros, nan, inf, norm = (float(v) for v in row)
    return Scalars(mean=mean, std=std, abs_max=amax if abs_max is None else abs_max,
                   zero_frac=zeros / count if count else 0.0,
                   nan=int(nan), inf=int(inf), norm=norm, ratio=ratio, count=count)


def _numeric(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray)) and (jnp.issubdtype(x.dtype, jnp.number)
                                                        and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key))


def _leaves(tree: Any, skipped: list[str] | None = None) -> list[tuple[str, Any]]:
    """``(variable path, array)`` of a tree's numeric leaves, in flattening order; Python and numpy
    numbers (not bools) become 0-d arrays. The paths of other leaves (strings, bools, objects; not
    arrays of bools or keys) are appended to ``skipped``."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        if isinstance(leaf, (int, float, complex, np.number)) and not isinstance(leaf, (bool, np.bool_)):
            leaf = jnp.asarray(leaf)
        if _numeric(leaf):
            out.append((format_path(names), leaf))
        elif skipped is not None and not isinstance(leaf, (jax.Array, np.ndarray)):
            skipped.append(f"{format_path(names)} ({type(leaf).__name__})")
    return out



@dataclasses.dataclass(frozen=True)
class _Emit:
    """What one emit records, known when it is traced: its sites, their element counts, for each
    gradient or update the index of its parameter's row (-1: none), the integer arrays' indices."""

    sites: tuple[Site, ...]
    counts: tuple[int, ...]
    ratio_of: tuple[int, ...]
    ints: tuple[int, ...]
    packing: tuple[str, str, str] = ("", "", "")  # returned as one array: its dtype, the step's, the int maxes'
    hist: bool = False  # each row also holds the site's histogram (:func:`~inspector.stats.scalars.log_histograms`)

    @property
    def width(self) -> int:
        """The numbers per site in the rows: :data:`~inspector.stats.scalars.N_STATS`, and the
        histogram's with ``hist``."""
        return stats.N_STATS + (2 * HIST_BINS if self.hist else 0)

    @functools.cached_property
    def _static(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        of = np.asarray(self.ratio_of, np.int64)
        return np.asarray(self.counts, np.int64), np.flatnonzero(of >= 0), of

    def unpack(self, packed: Any) -> tuple[int, np.ndarray, np.ndarray | None]:
        """``(step, rows, int_max or None)`` from the one array a recording step returned."""
        words, step_dtype = np.dtype(self.packing[0]), np.dtype(self.packing[1])
        packed = np.asarray(packed)
        k = np.dtype(step_dtype).itemsize // words.itemsize
        step = int(np.ascontiguousarray(packed[:k]).view(step_dtype)[0])
        end = k + len(self.sites) * self.width
        rows = packed[k:end].reshape(len(self.sites), self.width)
        int_max = np.ascontiguousarray(packed[end:]).view(self.packing[2]) if self.ints else None
        return step, rows, int_max

    def cells(self, rows: Any, int_max: Any = None, keep: Any = None) -> tuple[tuple[Site, ...], np.ndarray]:
        """``(sites, cells)`` (:data:`~inspector.history.CELL`) of the rows an emit handed over;
        ``keep`` (a mask) leaves sites out."""
        rows = np.asarray(rows, np.float64)
        if rows.shape != (len(self.sites), self.width):  # a part of the rows: never record it as the whole
            raise ValueError(f"fi.watch received statistics of {rows.shape[0]} of {len(self.sites)} sites")
        rows = rows[:, :stats.N_STATS]
        counts, has, of = self._static
        out = np.zeros(len(self.sites), CELL)
        out["mean"], out["std"], out["abs_max"], out["norm"] = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 6]
        if self.ints:
            out["abs_max"][list(self.ints)] = [float(int(v)) for v in np.asarray(int_max).reshape(-1)]
        out["zero_frac"] = np.divide(rows[:, 3], counts, out=np.zeros(len(counts)), where=counts > 0)
        out["nan"], out["inf"] = rows[:, 4], rows[:, 5]
        ratio = np.full(len(counts), np.nan)
        if len(has):  # undefined where the parameter's norm is 0
            p = rows[of[has], 6]
            ratio[has] = np.where(p != 0, rows[has, 6] / np.where(p != 0, p, 1.0), np.nan)
        out["ratio"], out["count"], out["applications"] = ratio, counts, 1
        if keep is None:
            return self.sites, out
        keep = np.asarray(keep, bool)
        return tuple(s for s, k in zip(self.sites, keep) if k), out[keep]

    def histograms(self, rows: Any, keep: Any = None) -> np.ndarray:
        """``(sites, HIST_BINS)`` exact counts (int64) from the rows of an emit with ``hist``, the
        sites ``keep`` leaves out left out."""
        cols = np.asarray(rows, np.float64)[:, stats.N_STATS:]
        counts = cols[:, :HIST_BINS].astype(np.int64) * 4096 + cols[:, HIST_BINS:].astype(np.int64)
        return counts if keep is None else counts[np.asarray(keep, bool)]

    def record(self, history: History, step: int, rows: Any, int_max: Any = None, keep: Any = None) -> None:
        """Adds the rows this emit handed over at ``step`` to ``history`` (statistics, histograms)."""
        sites, cells = self.cells(rows, int_max, keep)
        history.add_many(step, sites, cells)
        if self.hist:
            history.add_histograms(step, sites, self.histograms(rows, keep))


def _emit_of(sites: list[Site], arrays: Sequence[Any], ints: list[int], relative: bool, hist: bool) -> _Emit:
    # gradients' and updates' norms relative to their parameter's (same name)
    param_at = {s.name: i for i, s in enumerate(sites) if s.kind == "param"} if relative else {}
    return _Emit(tuple(sites), tuple(int(np.prod(np.shape(a))) for a in arrays),
                 tuple(param_at.get(s.name, -1) if s.kind in ("grad", "update") else -1 for s in sites),
                 tuple(ints), hist=hist)


@jax.tree_util.register_pytree_node_class
class _Records:
    """What a recording step returns beside the function's outputs: per emit, its :class:`_Emit`
    (static) and its step, rows and (with integer arrays) exact abs-maxes (arrays)."""

    def __init__(self, emits: tuple[_Emit, ...] = (), arrays: tuple = ()):
        self.emits, self.arrays = emits, arrays

    def tree_flatten(self) -> tuple[tuple, tuple[_Emit, ...]]:
        return self.arrays, self.emits

    @classmethod
    def tree_unflatten(cls, emits: tuple[_Emit, ...], arrays: Any) -> _Records:
        return cls(emits, tuple(arrays))

    def each(self) -> Iterator[tuple[_Emit, Any]]:
        """``(emit, packed array)`` per emit, in the order traced (:meth:`_Emit.unpack`)."""
        return zip(self.emits, self.arrays)


def _words(x: Any, dtype: Any) -> tuple[jax.Array, str]:
    """The bits of the integers ``x`` as a flat array of ``dtype`` words, and the integer dtype they
    are read back as (widened to the words' width where narrower)."""
    x = jnp.asarray(x).reshape(-1)
    width = np.dtype(dtype).itemsize
    if x.dtype.itemsize < width:
        x = x.astype(jnp.uint64 if jnp.issubdtype(x.dtype, jnp.unsignedinteger) else jnp.int64)
    return lax.bitcast_convert_type(x, dtype).reshape(-1), np.dtype(x.dtype).name


class _Recording:
    """The trace of a recording step: emits staged in it are returned with its outputs."""

    def __init__(self) -> None:
        self.trace = current_trace()
        self.emits: list[_Emit] = []
        self.arrays: list[Any] = []

    def takes(self, values: Sequence[Any]) -> bool:
        """Whether ``values`` can leave the step as outputs: constants or tracers of the step's own
        trace (not of a scan body, ``vmap``, ``shard_map`` or ``checkpoint`` inside it)."""
        from jax.core import Tracer

        return jax.process_count() == 1 and all(
            not isinstance(v, Tracer) or staged_in(v, self.trace) for v in values)

    def add(self, emit: _Emit, step: Any, rows: jax.Array, int_max: jax.Array | None) -> None:
        """Returns ``step``, ``rows`` and ``int_max`` as one array of the rows' dtype (integers by their
        bits): one read on the host."""
        step_w = _words(step, rows.dtype)
        max_w = _words(int_max, rows.dtype) if int_max is not None else None
        packing = (np.dtype(rows.dtype).name, step_w[1], max_w[1] if max_w is not None else "")
        self.emits.append(dataclasses.replace(emit, packing=packing))
        self.arrays.append(jnp.concatenate([step_w[0], rows.reshape(-1)] + ([max_w[0]] if max_w else [])))

    def records(self) -> _Records:
        return _Records(tuple(self.emits), tuple(self.arrays))


def _device_keep(arrays: Sequence[jax.Array]) -> jax.Array | None:
    """Inside a ``shard_map`` every device calls the callback with its own block: per array, whether this
    device's copy is the one to record (index 0 along the manual axes the array does not vary over,
    so a replicated block is recorded once); ``None`` outside ``shard_map``."""
    manual = tuple(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()))
    if not manual:
        return None
    keep = []
    for a in arrays:
        mat = getattr(jax.typeof(a), "manual_axis_type", None)
        varying = getattr(mat, "varying", frozenset(manual))
        first = jnp.ones((), bool)
        for axis in manual:
            if axis not in varying:
                first = first & (lax.axis_index(axis) == 0)
        keep.append(first)
    return jnp.stack(keep)


class _Order:
    """A method interceptor that notes the order in which bound modules' methods are first
    called (names only, so it is safe inside lifted transforms)."""

    def __init__(self) -> None:
        self.first: dict[tuple[tuple[str, ...], str], int] = {}
        self.ran: list[tuple[Any, str]] = []  # (module, method) of each first call: what a filter could match

    def __call__(self, next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        y = next_fun(*args, **kwargs)
        module, name = context.module, context.method_name
        if recorded_call(module, name):
            key = (tuple(module.path), name)
            if key not in self.first:
                self.first[key] = len(self.first)
                if public_method(name):
                    self.ran.append((module, name))
        return y


def _captured(inter: Any, order: dict[tuple[tuple[str, ...], str], int]) -> list[tuple[str, jax.Array]]:
    """``(site name, array)`` of every captured value, calls in execution order."""
    found: list[tuple[int, int, str, jax.Array]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        for k, v in node.items():
            if isinstance(v, tuple):  # a method's captured values, one per call
                rank = order.get((path, k), len(order))
                for call, out in enumerate(v):
                    leaves = [leaf for leaf in jax.tree.leaves(out) if _numeric(leaf)]
                    key = format_key(path, k, call)
                    for i, leaf in enumerate(leaves):
                        found.append((rank, call, key if len(leaves) == 1 else f"{key}.{i}", leaf))
            elif hasattr(v, "items"):
                walk(v, path + (k,))

    walk(inter, ())
    found.sort(key=lambda f: (f[0], f[1]))
    return [(name, a) for _, _, name, a in found]
