"""Rows of statistics: what every path fills and the host decodes.

Every described array becomes one row of 32-bit words; a :class:`Layout` says which word holds
which statistic for arrays of one dtype (and x64 mode). :func:`decode_rows` / :func:`unpack` turn
rows into :class:`~inspector.model.Stats`. Also here: the values every path describes
(:func:`_values`: ``|z|`` for complex, half floats as stored, subnormals as the device reads them)
and the histogram's sample positions (:func:`_positions`), which every path shares.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inspector.model import Stats


BINS = 16


SAMPLE = 4096  # larger arrays: histogram of this many elements at fixed positions


TRUST = 64.0  # a summary's variance is trusted while (mean - shift)^2 <= TRUST * variance


_INTS = ("trusted", "nan", "posinf", "neginf", "zeros", "finite", "sample", "exponent")


def supported(x: object) -> bool:
    """True for arrays whose statistics make sense (numbers and bools, not PRNG keys)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        return False
    return supported_dtype(dtype)


@functools.lru_cache(maxsize=512)
def supported_dtype(dtype: Any) -> bool:
    """:func:`supported` for arrays of ``dtype``."""
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_))


optimization_barrier: Callable[[Any], Any] = lax.optimization_barrier
"""``lax.optimization_barrier`` (typed): XLA neither fuses across it nor skips a rounding before it."""


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]  # the flag, as jax reads it


def _classes(dtype: Any) -> tuple[np.dtype, np.dtype, str]:
    """``(native, accumulator, kind)`` for an array dtype: ``native`` holds min/max
    exactly, ``accumulator`` the sums; kind is 'float', 'int' or 'complex'."""
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    wide = dtype.itemsize >= (16 if jnp.issubdtype(dtype, jnp.complexfloating) else 8) and _x64()
    acc = np.dtype(np.float64 if wide else np.float32)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return acc, acc, "complex"
    if jnp.issubdtype(dtype, jnp.floating):
        return acc, acc, "float"
    if dtype == np.bool_ or dtype.itemsize < 4:
        return np.dtype(np.int32), acc, "int"
    return dtype, acc, "int"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each statistic sits in a row of uint32 words: ints, then min/max/shift in
    the array's native type, then mean/variance/histogram edges in the accumulator type."""

    native: np.dtype
    acc: np.dtype
    kind: str

    @property
    def _n(self) -> int:
        return self.native.itemsize // 4

    @property
    def _a(self) -> int:
        return self.acc.itemsize // 4

    @property
    def width(self) -> int:
        return len(_INTS) + BINS + 3 * self._n + (3 + BINS + 1) * self._a


def layout(dtype: Any) -> Layout:
    """The row layout used for arrays of ``dtype`` (its accumulator depends on the x64 mode)."""
    return _layout(dtype, _x64())


@functools.cache
def _layout(dtype: Any, x64: bool) -> Layout:
    return Layout(*_classes(dtype))


def _words(*parts: jax.Array) -> jax.Array:
    """Scalars and vectors of 32- or 64-bit types, as one vector of uint32 words."""
    out = []
    for p in parts:
        p = jnp.atleast_1d(p)
        w = lax.bitcast_convert_type(p, jnp.uint32)
        out.append(w.reshape(-1))
    return jnp.concatenate(out)


@functools.lru_cache(maxsize=256)
def _positions(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Every position of a small array, or ``SAMPLE`` distinct, evenly spread positions of a
    large one (a golden-ratio sequence: no stride that could line up with an axis)."""
    return tuple(i.astype(np.int32) for i in np.unravel_index(flat_positions(math.prod(shape)), shape))


@functools.lru_cache(maxsize=256)
def flat_positions(size: int) -> np.ndarray:
    """:func:`_positions` of an array of ``size`` elements, as indices into it flattened (C order)."""
    if size <= SAMPLE:
        return np.arange(size)
    return np.unique((np.arange(SAMPLE) * 0.6180339887498949 % 1.0 * size).astype(np.int64))


def _sample(v: jax.Array) -> jax.Array:
    """The elements a histogram counts, as a vector (see :func:`_positions`)."""
    return v.reshape(1) if v.ndim == 0 else v[_positions(v.shape)]


@functools.cache
def flushes_subnormals(platform: str | None = None) -> bool:
    """True if the default device reads subnormal floats as zero (XLA:CPU does)."""
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    with jax.ensure_compile_time_eval():
        return bool(jax.jit(lambda x: x == 0)(tiny))


def _values(x: jax.Array) -> jax.Array:
    """The values statistics describe, in a type that holds them exactly. Where the device
    reads subnormals as zero, every path describes them as zero (``flushes_subnormals``)."""
    native, _, kind = _classes(x.dtype)
    # |z| as C99 (and numpy) define it, in the array's real type: infinite if either part is,
    # or if the magnitude is beyond that type's range
    if kind == "complex":
        v = jnp.where(jnp.isinf(x.real) | jnp.isinf(x.imag), jnp.inf, jnp.abs(x)).astype(native)
    elif jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < 4:
        # Without the barrier XLA may fuse the statistics into the producer and skip the rounding.
        v = optimization_barrier(x).astype(native)
    elif jnp.issubdtype(x.dtype, jnp.floating):
        v = x.astype(native)
    else:
        return x.astype(native)
    return _flushed(v)


def _flushed(v: jax.Array) -> jax.Array:
    """``v`` with subnormals as (signed) zero where the device reads them so."""
    if flushes_subnormals(jax.default_backend()):
        return jnp.where(jnp.abs(v) < np.finfo(v.dtype).tiny, v * 0, v)
    return v


def _row(ints: dict[str, jax.Array | int], hist: jax.Array, lo: jax.Array, hi: jax.Array, shift: jax.Array,
         mean_d: jax.Array, corr: jax.Array, var_d: jax.Array, edges: jax.Array, lay: Layout) -> jax.Array:
    i32 = [jnp.asarray(ints.get(k, 0), jnp.int32) for k in _INTS]
    return _words(jnp.stack(i32), hist.astype(jnp.int32),
                  jnp.stack([lo, hi, shift]).astype(lay.native),
                  jnp.stack([mean_d, corr, var_d]).astype(lay.acc), edges.astype(lay.acc))


def _unsigned(v: jax.Array) -> jax.Array:
    """The same bits as an unsigned integer of the same width (wrap-around arithmetic)."""
    if jnp.issubdtype(v.dtype, jnp.unsignedinteger):
        return v
    return lax.bitcast_convert_type(v, {4: jnp.uint32, 8: jnp.uint64}[v.dtype.itemsize])


def _matrix(ints: jax.Array, hist: jax.Array, native: jax.Array, acc: jax.Array, width: int) -> jax.Array:
    """Rows ``(k, width)`` of uint32 words from per-row blocks (padded to ``width``)."""
    k = ints.shape[0]
    parts = [lax.bitcast_convert_type(p, jnp.uint32).reshape(k, -1) for p in (ints, hist, native, acc)]
    rows = jnp.concatenate(parts, axis=1)
    return jnp.pad(rows, ((0, 0), (0, width - rows.shape[1])))


def row_width(dtypes: Sequence[Any]) -> int:
    """The stride of rows in :func:`summarize`'s and :func:`describe`'s output."""
    return max((layout(d).width for d in dtypes), default=0)


def unpack(rows: np.ndarray, dtypes: Sequence[Any], shapes: Sequence[tuple[int, ...]]) -> list[Stats]:
    """Host side: rows ``(k, row_width)`` of arrays of ``dtypes`` and ``shapes`` as Stats."""
    return decode_rows(rows, row_groups([layout(d) for d in dtypes], [math.prod(s) for s in shapes]))


_ROW_BY_ROW = 12  # float rows of one layout up to which plain Python per row is quicker than columns


RowGroups = list[tuple[Layout, Any, list[int], list[int]]]
"""Rows of one layout at a time: ``(layout, rows selector, row numbers, element counts)``."""


def row_groups(layouts: Sequence[Layout], counts: Sequence[int]) -> RowGroups:
    """How :func:`decode_rows` reads rows of ``layouts`` (made once per plan: rows are decoded every call)."""
    by_layout: dict[int, list[int]] = {}
    for i, lay in enumerate(layouts):
        by_layout.setdefault(id(lay), []).append(i)
    groups: RowGroups = []
    for idx in by_layout.values():
        whole = idx == list(range(len(layouts)))
        groups.append((layouts[idx[0]], slice(None) if whole else np.asarray(idx), idx, [counts[r] for r in idx]))
    return groups


def _columns(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Columns of uint32 words as ``dtype`` (a view where the words are its size)."""
    return block.view(dtype) if dtype.itemsize == 4 else np.ascontiguousarray(block).view(dtype)


def decode_rows(rows: np.ndarray, groups: RowGroups) -> list[Stats]:
    """Rows ``(k, >= width)`` as :class:`Stats`, a layout at a time (numpy views of the whole
    block, then plain Python per row, or column-wise for many float rows)."""
    rows = np.asarray(rows, np.uint32)
    decoded: list[Any] = [None] * sum(len(g[2]) for g in groups)
    i = len(_INTS) + BINS
    for lay, select, idx, counts in groups:
        block = rows[select, :lay.width]
        j = i + 3 * lay._n
        ints, native, accs = block[:, :i].view(np.int32), _columns(block[:, i:j], lay.native), \
            _columns(block[:, j:], lay.acc)
        if lay.kind == "int" or len(idx) <= _ROW_BY_ROW:
            out = [_decode(n, nat, acc, lay, c) for n, nat, acc, c in
                   zip(ints.tolist(), native.tolist(), accs.tolist(), counts)]
        else:
            out = _decode_floats(ints, native, accs, lay, counts)
        for r, st in zip(idx, out):
            decoded[r] = st
    return decoded


def _stats(count: int, mean: float, std: float, lo: Any, hi: Any, abs_max: Any, zeros: int, nan: int, posinf: int,
           neginf: int, hist: tuple[int, ...], hist_sample: int, of: str, hist_edges: tuple[Any, ...],
           trusted: bool) -> Stats:
    """``Stats(...)``, every field given in order, without a frozen dataclass's setattr per field (a
    call's rows are decoded every call)."""
    st = _new(Stats)
    st.__dict__.update(count=count, mean=mean, std=std, min=lo, max=hi, abs_max=abs_max, zeros=zeros, nan=nan,
                       posinf=posinf, neginf=neginf, hist=hist, hist_sample=hist_sample, of=of, hist_edges=hist_edges,
                       trusted=trusted)
    return st


_new = object.__new__
# what _stats fills, in order: every field of Stats
assert tuple(f.name for f in dataclasses.fields(Stats)) == (
    "count", "mean", "std", "min", "max", "abs_max", "zeros", "nan", "posinf", "neginf", "hist", "hist_sample", "of",
    "hist_edges", "trusted")


def _decode_floats(ints: np.ndarray, native: np.ndarray, accs: np.ndarray, lay: Layout,
                   counts: list[int]) -> list[Stats]:
    """:func:`_decode` of a block of float or complex rows, its arithmetic done column-wise in
    float64 (the same IEEE operations, so the same values)."""
    lo, hi, shift = (native[:, c].astype(np.float64) for c in range(3))
    acc = accs.astype(np.float64)
    exponent = ints[:, 7]
    with np.errstate(invalid="ignore", over="ignore"):
        mean = np.ldexp(shift + (acc[:, 0] + acc[:, 1]), exponent)
        std = np.ldexp(np.sqrt(acc[:, 2]), exponent)
        abs_max = np.maximum(np.abs(lo), np.abs(hi))
    finite = ints[:, 5] != 0
    nan = float("nan")
    for col in (lo, hi, mean, std, abs_max):
        col[~finite] = nan
    of = "|z|" if lay.kind == "complex" else ""
    if (ints[:, 6] < 0).all():  # in-call summaries only: no histogram to read, a column at a time
        return [_stats(c, m, sd, a, b, am, zeros, n, p, ng, (), 0, of, (), t) for c, m, sd, a, b, am, zeros, n, p, ng, t
                in zip(counts, mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(), abs_max.tolist(),
                       *(ints[:, k].tolist() for k in (4, 1, 2, 3)), (ints[:, 0] != 0).tolist())]
    out = []
    hists, edge_rows = ints[:, len(_INTS):].tolist(), acc[:, 3:].tolist()
    for n, c, m, sd, a, b, am, f, row, edges in zip(
            ints[:, :len(_INTS)].tolist(), counts, mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(),
            abs_max.tolist(), finite.tolist(), hists, edge_rows):
        summary = n[6] < 0  # no histogram yet
        out.append(_stats(c, m, sd, a, b, am, n[4], n[1], n[2], n[3], () if summary else tuple(row),
                          0 if summary else n[6], of, () if summary or not f else tuple(edges), bool(n[0])))
    return out


def _decode(ints: list[Any], native: list[Any], accs: list[Any], lay: Layout, count: int) -> Stats:
    trusted_, nan, posinf, neginf, zeros, finite, sample, exponent = ints[:len(_INTS)]
    hist = tuple(ints[len(_INTS):])
    lo, hi, shift = native
    mean_d, var_d = accs[0] + accs[1], accs[2]
    edges = tuple(accs[3:])
    if lay.kind == "int":
        lo, hi, shift = int(lo), int(hi), int(shift)
        mean = shift + mean_d
        edges = tuple(lo + e for e in edges)
        abs_max: float = max(abs(lo), abs(hi))
        std = math.sqrt(var_d)
    else:
        mean = math.ldexp(shift + mean_d, exponent)
        abs_max = max(abs(lo), abs(hi))
        std = math.ldexp(math.sqrt(var_d), exponent)
    if sample < 0:  # a summary: no histogram yet
        hist, edges, sample = (), (), 0
    if not finite:
        lo = hi = mean = std = abs_max = float("nan")
        edges = ()
    return _stats(count, mean, std, lo, hi, abs_max, zeros, nan, posinf, neginf, hist, sample,
                  "|z|" if lay.kind == "complex" else "", edges, bool(trusted_))
