"""Statistics of arrays: on the device, or in place by numpy where the device is the host.

Every described array becomes one row of 32-bit words (a :class:`Layout` says which),
so statistics reach the host as one small array that :func:`unpack` turns into
:class:`~inspector.model.Stats`. Three ways to fill a row:

* :func:`summarize`, traced into the inspected call: five reductions per array that XLA
  fuses with the producer (:func:`_group_cheap`). The row says whether it can be
  trusted (finite, no overflow, well-conditioned variance); if not, it is redone exactly.
* :func:`describe_many` / :func:`describe_exact`: exact rows, masked, overflow-safe and
  centred on a sample's median (:func:`_moments`), for arrays grouped by layout
  (:func:`_group_exact`: compile time flat in the number of arrays) or one by one when
  sharded over several devices.
* :func:`host_stats` / :func:`host_stats_many`: the same definitions by numpy in float64,
  used on the CPU backend (:func:`on_host`), where reading an array costs no copy and
  XLA would compile a kernel per reduction.

Definitions (the README states them with their tolerances): ``mean``/``std``
(population) and ``min``/``max``/``abs_max`` are over finite elements; ``nan``,
``posinf``, ``neginf`` and ``zeros`` are exact counts; the histogram has ``BINS``
equal bins whose edges are computed from ``min``/``max``, over every finite element or,
above ``SAMPLE`` elements, over ``SAMPLE`` elements at fixed positions. Complex arrays are
described by ``|z|``. Half-precision floats are read as stored (an optimization barrier
stops XLA from describing a fused, unrounded producer); subnormals as the device reads them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_))


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


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
    size = math.prod(shape)
    if size <= SAMPLE:
        flat = np.arange(size)
    else:
        flat = np.unique((np.arange(SAMPLE) * 0.6180339887498949 % 1.0 * size).astype(np.int64))
    return tuple(i.astype(np.int32) for i in np.unravel_index(flat, shape))


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
        v = lax.optimization_barrier(x).astype(native)
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


def _hist(sample: jax.Array, ok: jax.Array, lo: jax.Array, hi: jax.Array, acc: Any):
    """Edges (``BINS + 1``, non-decreasing, overflow-free) and counts of ``sample[ok]``:
    bin i holds ``edges[i] <= v < edges[i+1]``, the last bin also ``v == edges[-1]``.
    Integers are binned by their distance from ``lo`` (exact as unsigned), so that the
    bins resolve any range; the host adds ``lo`` back to the edges."""
    if jnp.issubdtype(sample.dtype, jnp.integer):
        s = (_unsigned(sample) - _unsigned(lo)).astype(acc)
        lo, hi = jnp.zeros((), acc), (_unsigned(hi) - _unsigned(lo)).astype(acc)
    else:
        s, lo, hi = sample.astype(acc), lo.astype(acc), hi.astype(acc)
    t = jnp.arange(BINS + 1, dtype=acc) / BINS
    half = hi / 2 - lo / 2  # no overflow; (lo + h t) + h t never decreases in t
    edges = jnp.minimum((lo + half * t) + half * t, hi)
    edges = edges.at[0].set(lo).at[BINS].set(hi)
    # at[j]: elements at or above edges[j] (every element for j = 0); bin j holds at[j] - at[j + 1]
    above = jnp.sum((s[:, None] >= edges[None, 1:BINS]) & ok[:, None], axis=0, dtype=jnp.int32)
    at = jnp.concatenate([jnp.sum(ok, dtype=jnp.int32)[None], above, jnp.zeros((1,), jnp.int32)])
    return edges, at[:-1] - at[1:]


def _minmax(v: jax.Array, fin: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(min, max)`` in one reduction (over ``fin`` elements when given, else NaN-propagating)."""
    if jnp.issubdtype(v.dtype, jnp.integer):
        mm = jnp.min(jnp.stack([v, ~v]), axis=tuple(range(1, v.ndim + 1)),  # ~v reverses the order exactly
                     initial=np.asarray(np.iinfo(v.dtype).max, v.dtype))
        return mm[0], ~mm[1]
    if fin is not None:
        mm = jnp.min(jnp.stack([jnp.where(fin, v, jnp.inf), jnp.where(fin, -v, jnp.inf)]),
                     axis=tuple(range(1, v.ndim + 1)), initial=jnp.inf)
    else:
        mm = jnp.min(jnp.stack([v, -v]), axis=tuple(range(1, v.ndim + 1)), initial=jnp.inf)
    return mm[0], -mm[1]


def _sums(*parts: jax.Array, dtype: Any) -> jax.Array:
    """Sums of equally shaped arrays, in one reduction."""
    x = jnp.stack(parts).astype(dtype)
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def _row(ints: dict[str, jax.Array | int], hist, lo, hi, shift, mean_d, corr, var_d, edges, lay: Layout) -> jax.Array:
    i32 = [jnp.asarray(ints.get(k, 0), jnp.int32) for k in _INTS]
    return _words(jnp.stack(i32), hist.astype(jnp.int32),
                  jnp.stack([lo, hi, shift]).astype(lay.native),
                  jnp.stack([mean_d, corr, var_d]).astype(lay.acc), edges.astype(lay.acc))


def _unsigned(v: jax.Array) -> jax.Array:
    """The same bits as an unsigned integer of the same width (wrap-around arithmetic)."""
    if jnp.issubdtype(v.dtype, jnp.unsignedinteger):
        return v
    return lax.bitcast_convert_type(v, {4: jnp.uint32, 8: jnp.uint64}[v.dtype.itemsize])


_EXPONENTS = {4: (-126, 88), 8: (-1022, 600)}


def _pow2(k: jax.Array, acc: Any) -> jax.Array:
    """``2.0 ** k`` exactly, for a normal power of two, built from its bits."""
    if np.dtype(acc).itemsize == 4:
        return lax.bitcast_convert_type((k + 127).astype(jnp.int32) << 23, jnp.float32)
    return lax.bitcast_convert_type((k + 1023).astype(jnp.int64) << 52, jnp.float64)


def _distance(v: jax.Array, c: jax.Array, acc: Any) -> jax.Array:
    """``v - c`` for integers, as a float of ``acc``: the exact difference, rounded once."""
    u, uc = _unsigned(v), _unsigned(c)
    return jnp.where(v >= c, (u - uc).astype(acc), -(uc - u).astype(acc))


def _add(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """The exact path's sums over ``axes``, in whatever order the device adds (the tests
    substitute the worst one: strictly one element after another)."""
    return jnp.sum(x, axes)


_FAN = 16
"""Rows the exact path adds at a time across an array's rows (:func:`_by_segment`)."""


def _by_segment(r: jax.Array, counts: Sequence[int]) -> jax.Array:
    """Sums of consecutive runs of ``counts`` rows of ``r`` (zero for an empty run), added as a
    tree, ``_FAN`` rows at a time. A segment sum would add one row after another (atomics on a
    GPU): the rounding errors of such a chain grow with its length, whatever the formula."""
    counts = list(counts)
    while True:
        zero = r.shape[0]  # the index of a row of zeros, to pad with
        r = jnp.concatenate([r, jnp.zeros((1, *r.shape[1:]), r.dtype)])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        if max(counts, default=0) <= 1:
            return r[np.asarray([s if c else zero for s, c in zip(starts, counts)], np.int32)]
        groups = [-(-c // _FAN) for c in counts]
        idx = np.full(sum(groups) * _FAN, zero, np.int32)
        at = 0
        for s, c, g in zip(starts, counts, groups):
            idx[at:at + c] = np.arange(s, s + c)
            at += g * _FAN
        r = _add(r[idx].reshape(-1, _FAN, *r.shape[1:]), (1,))
        counts = groups


def _medians(sample: jax.Array, ok: jax.Array, sizes: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """The lower median of each segment's ``ok`` values (segments of static ``sizes`` in
    ``sample``) and how many there are; a segment without one gives its largest value."""
    top = np.asarray(np.iinfo(sample.dtype).max if jnp.issubdtype(sample.dtype, jnp.integer) else np.inf,
                     sample.dtype)
    if not sample.size:
        return jnp.zeros((len(sizes),), sample.dtype), jnp.zeros((len(sizes),), jnp.int32)
    seg = _seg(sizes)
    _, ordered = lax.sort((seg, jnp.where(ok, sample, top)), num_keys=2)
    count = _ssum(ok.astype(jnp.int32), seg, len(sizes))
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    return ordered[jnp.asarray(start) + jnp.maximum(count - 1, 0) // 2], count


def _moments(d: jax.Array, keep: jax.Array, n: jax.Array, total: Any, each: Any):
    """``(mean, correction, variance)`` of ``d[keep]`` (``d`` zero elsewhere), distances from a
    centre amid the values. One pass about that centre: the sums of squares then hold no large
    term per ordinary element, so the device's order of summation loses nothing that matters.
    Where the centre turns out far from the mean (beyond one standard deviation), a second pass
    about the mean gives the variance instead, its mean correcting the first."""
    a = total(jnp.stack([d, d * d], axis=-1))
    m = a[..., 0] / n
    var_a = jnp.maximum(a[..., 1] / n - m * m, 0)
    dd = jnp.where(keep, d - each(m), 0)
    b = total(jnp.stack([dd, dd * dd], axis=-1))
    corr = b[..., 0] / n
    var_b = jnp.maximum(b[..., 1] / n - corr * corr, 0)
    near = m * m <= var_a
    return m, jnp.where(near, 0, corr), jnp.where(near, var_a, var_b)


def _exact(x: jax.Array) -> jax.Array:
    """Every statistic from every element: masked, overflow-safe, centred on the median of
    the sample (:func:`_moments`)."""
    lay = layout(x.dtype)
    v = _values(x)
    acc = lay.acc
    n = math.prod(x.shape)
    sample = _sample(v)

    def total(y):  # every element -> (2,)
        return _add(y, tuple(range(y.ndim - 1)))

    if lay.kind == "int":
        lo, hi = _minmax(v)
        centre = _medians(sample, jnp.ones(sample.shape, bool), [sample.size])[0][0]
        m, corr, var = _moments(_distance(v, centre, acc), jnp.ones(v.shape, bool), jnp.asarray(max(n, 1), acc),
                                total, lambda y: y)
        edges, hist = _hist(sample, jnp.ones(sample.shape, bool), lo, hi, acc)
        ints: dict[str, jax.Array | int] = {"trusted": 1, "zeros": jnp.sum(v == 0, dtype=jnp.int32), "finite": n,
                                            "sample": sample.size if n > SAMPLE else 0}
        return _row(ints, hist, lo, hi, centre, m, corr, var, edges, lay)
    fin = jnp.isfinite(v)
    nf, nan, posinf, neginf, zeros = _sums(fin, jnp.isnan(v), v == jnp.inf, v == -jnp.inf, v == 0, dtype=jnp.int32)
    lo, hi = _minmax(v, fin)
    top = jnp.where(nf > 0, jnp.maximum(jnp.abs(lo), jnp.abs(hi)), 0)
    _, e = jnp.frexp(top)  # top = m * 2**e with 0.5 <= m < 1
    e = jnp.clip(e, *_EXPONENTS[np.dtype(acc).itemsize])  # scaled values stay normal, squares can't overflow
    scale = _pow2(-e, acc)
    sf = jnp.isfinite(sample)
    mid, k = _medians(sample * scale, sf, [sample.size])
    # Scaled values are centred on the median of the sample (else the middle of the range).
    centre = jnp.where(k[0] > 0, mid[0], jnp.where(nf > 0, lo * scale / 2 + hi * scale / 2, 0))
    vs = jnp.where(fin, v * scale - centre, 0)
    m, corr, var = _moments(vs, fin, jnp.maximum(nf, 1).astype(acc), total, lambda y: y)
    edges, hist = _hist(sample, sf, jnp.where(nf > 0, lo, 0), jnp.where(nf > 0, hi, 0), acc)
    ints = {"trusted": 1, "nan": nan, "posinf": posinf, "neginf": neginf, "zeros": zeros, "finite": nf,
            "sample": sample.size if n > SAMPLE else 0, "exponent": e}
    return _row(ints, hist, lo, hi, centre, m, corr, var, edges, lay)


# -- many arrays at once ------------------------------------------------------------
# XLA:CPU spends milliseconds compiling each separate reduction, so arrays are described in
# groups of one layout: concatenated, then reduced by segment. The number of operations, and
# so the compile time, does not grow with the number of arrays.

def _seg(sizes: Sequence[int]) -> jax.Array:
    """Segment id of every element of the concatenation of arrays of ``sizes`` (a constant:
    cheaper to compile than computing it)."""
    return jnp.asarray(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))


def _ssum(x: jax.Array, seg: jax.Array, k: int) -> jax.Array:
    return jax.ops.segment_sum(x, seg, num_segments=k, indices_are_sorted=True)


def _smin(x: jax.Array, seg: jax.Array, k: int) -> jax.Array:
    return jax.ops.segment_min(x, seg, num_segments=k, indices_are_sorted=True)


def _ghist(sample: jax.Array, sseg: jax.Array, ok: jax.Array, lo: jax.Array, hi: jax.Array, k: int, acc: Any):
    """:func:`_hist` per segment: edges ``(k, BINS + 1)`` and counts ``(k, BINS)``."""
    if jnp.issubdtype(sample.dtype, jnp.integer):
        s = (_unsigned(sample) - _unsigned(lo)[sseg]).astype(acc)
        lo, hi = jnp.zeros(lo.shape, acc), (_unsigned(hi) - _unsigned(lo)).astype(acc)
    else:
        s, lo, hi = sample.astype(acc), lo.astype(acc), hi.astype(acc)
    t = (jnp.arange(BINS + 1, dtype=acc) / BINS)[None, :]
    half = (hi / 2 - lo / 2)[:, None]  # no overflow; (lo + h t) + h t never decreases in t
    edges = jnp.minimum((lo[:, None] + half * t) + half * t, hi[:, None])
    edges = edges.at[:, 0].set(lo).at[:, BINS].set(hi)
    above = _ssum(((s[:, None] >= edges[sseg, 1:BINS]) & ok[:, None]).astype(jnp.int32), sseg, k)
    at = jnp.concatenate([_ssum(ok.astype(jnp.int32), sseg, k)[:, None], above, jnp.zeros((k, 1), jnp.int32)], axis=1)
    return edges, at[:, :-1] - at[:, 1:]


def _matrix(ints: jax.Array, hist: jax.Array, native: jax.Array, acc: jax.Array, width: int) -> jax.Array:
    """Rows ``(k, width)`` of uint32 words from per-row blocks (padded to ``width``)."""
    k = ints.shape[0]
    parts = [lax.bitcast_convert_type(p, jnp.uint32).reshape(k, -1) for p in (ints, hist, native, acc)]
    rows = jnp.concatenate(parts, axis=1)
    return jnp.pad(rows, ((0, 0), (0, width - rows.shape[1])))


def _group_exact(arrays: Sequence[jax.Array], width: int, block: int = _FAN) -> jax.Array:
    """Exact rows ``(k, width)`` of arrays sharing one layout (see :func:`_exact`).

    Each array fills whole rows of a ``(rows, block)`` matrix (zero-padded, masked): float
    sums run along a row (the device's own reduction), then over an array's rows as a tree
    (:func:`_by_segment`), so that no sum is a long chain of additions."""
    lay = layout(arrays[0].dtype)
    acc, k = lay.acc, len(arrays)
    values = [_values(a) for a in arrays]
    sizes = [math.prod(a.shape) for a in arrays]
    nrows = [-(-n // block) for n in sizes]  # an empty array has no rows
    flat = [x.reshape(-1) if r * block == n else jnp.pad(x.reshape(-1), (0, r * block - n))
            for x, n, r in zip(values, sizes, nrows)]
    v = (jnp.concatenate(flat) if len(flat) > 1 else flat[0]).reshape(-1, block)
    seg = _seg(nrows)  # the array of each row
    first = np.concatenate([[0], np.cumsum(nrows)[:-1]]).astype(np.int64)
    n = jnp.asarray(sizes, jnp.int32)
    at = (jnp.arange(v.shape[0], dtype=jnp.int32) - jnp.asarray(first, jnp.int32)[seg])[:, None] * block
    valid = at + jnp.arange(block, dtype=jnp.int32)[None, :] < n[seg][:, None]
    picks = [first[i] * block + np.ravel_multi_index(_positions(a.shape), a.shape) if a.ndim else
             np.array([first[i] * block]) for i, a in enumerate(arrays)]
    sample = v.reshape(-1)[jnp.asarray(np.concatenate(picks), jnp.int32)]
    ssizes = [p.size for p in picks]
    sseg = _seg(ssizes)
    scount = [p.size if sz > SAMPLE else 0 for p, sz in zip(picks, sizes)]

    def total(x):  # (rows, block, ...) -> (k, ...)
        if jnp.issubdtype(x.dtype, jnp.integer):  # counts: exact in any order
            return _ssum(jnp.sum(x, axis=1), seg, k)
        return _by_segment(_add(x, (1,)), nrows)

    def least(x):
        return _smin(jnp.min(x, axis=1), seg, k)

    def each(x):  # per-array values, per element
        return x[seg][:, None]

    if lay.kind == "int":
        big = np.asarray(np.iinfo(lay.native).max, lay.native)
        mm = least(jnp.stack([jnp.where(valid, v, big), jnp.where(valid, ~v, big)], axis=2))  # ~v reverses order
        lo = jnp.where(n > 0, mm[:, 0], 0).astype(lay.native)
        hi = jnp.where(n > 0, ~mm[:, 1], 0).astype(lay.native)
        ok = jnp.ones(sample.shape, bool)
        centre = _medians(sample, ok, ssizes)[0]
        nd = jnp.maximum(n, 1).astype(acc)
        m, corr, var = _moments(jnp.where(valid, _distance(v, each(centre), acc), 0), valid, nd, total, each)
        zeros = total(((v == 0) & valid).astype(jnp.int32))
        nf, nan, posinf, neginf, e = n, 0 * n, 0 * n, 0 * n, 0 * n
    else:
        fin = jnp.isfinite(v) & valid
        counts = total(jnp.stack([fin, jnp.isnan(v), v == jnp.inf, v == -jnp.inf, (v == 0) & valid],
                                 axis=2).astype(jnp.int32))
        nf, nan, posinf, neginf, zeros = (counts[:, i] for i in range(5))
        mm = least(jnp.stack([jnp.where(fin, v, jnp.inf), jnp.where(fin, -v, jnp.inf)], axis=2))
        lo, hi = jnp.where(nf > 0, mm[:, 0], 0), jnp.where(nf > 0, -mm[:, 1], 0)
        _, e = jnp.frexp(jnp.maximum(jnp.abs(lo), jnp.abs(hi)))  # top = m 2**e, 0.5 <= m < 1
        e = jnp.clip(e, *_EXPONENTS[acc.itemsize])  # scaled values stay normal, squares can't overflow
        scale = _pow2(-e, acc)
        ok = jnp.isfinite(sample)
        mid, kk = _medians(sample * scale[sseg], ok, ssizes)
        # scaled values are centred on the median of the sample (else the middle of the range)
        centre = jnp.where(kk > 0, mid, lo * scale / 2 + hi * scale / 2)
        vs = jnp.where(fin, v * each(scale) - each(centre), 0)
        m, corr, var = _moments(vs, fin, jnp.maximum(nf, 1).astype(acc), total, each)
    edges, hist = _ghist(sample, sseg, ok, lo, hi, k, acc)
    ints = jnp.stack([jnp.ones((k,), jnp.int32), nan, posinf, neginf, zeros, nf,
                      jnp.asarray(scount, jnp.int32), e], axis=1).astype(jnp.int32)
    native = jnp.stack([lo, hi, centre.astype(lay.native)], axis=1).astype(lay.native)
    accs = jnp.concatenate([jnp.stack([m, corr, var], axis=1), edges], axis=1).astype(acc)
    return _matrix(ints, hist, native, accs, width)


def countable(dtype: Any) -> int:
    """The most elements whose count :func:`count_zeros` gives exactly, for a float dtype."""
    return 2 ** (np.finfo(dtype).nmant + 1)


def count_zeros(v: jax.Array, axes: tuple[int, ...] | None = None) -> jax.Array:
    """How many elements of the real float array ``v`` are zero (over ``axes``, all by default),
    as a float of ``v``'s type: a float sum of a select, which XLA:CPU fuses with the producer (an
    integer count of a comparison costs it several float sums). Exact for at most :func:`countable` elements;
    subnormals count as the device's arithmetic reads them (zero where it flushes them)."""
    # ``|v| < tiny`` where the device flushes: XLA may compare a converted bf16 without flushing it
    zero = jnp.abs(v) < np.finfo(v.dtype).tiny if flushes_subnormals(jax.default_backend()) else v == 0
    return jnp.sum(jnp.where(zero, np.ones((), v.dtype), np.zeros((), v.dtype)), axes)


def _float_fields(x: jax.Array, lay: Layout, axes: tuple[int, ...] | None = None) -> Fields:
    """The reductions of a real float array (over ``axes``, all by default): five float sums,
    minima and maxima (no integer count, which costs XLA:CPU several float sums). Sums and the
    zero count read subnormals as the device's arithmetic does; min and max are flushed later
    (:func:`_fields`: flushing never reorders values)."""
    v = lax.optimization_barrier(x).astype(lay.native) if x.dtype.itemsize < 4 else x.astype(lay.native)
    return jnp.sum(v, axes), jnp.sum(v * v, axes), jnp.min(v, axes), jnp.max(v, axes), count_zeros(v, axes)


SMALL = 16_384
"""Elements up to which captured arrays of one shape are stacked and summarized together: a
reduction per array costs XLA:CPU a kernel launch more than the copy."""


Fields = tuple[jax.Array, ...]
"""The five reductions a summary is made of: sum, sum of squares, min (NaN-propagating), max,
zeros (a float count, or an int32 one where a float can't count them all)."""


def summary_fields(x: jax.Array) -> Fields | None:
    """The reductions :func:`summarize` makes of ``x`` alone, to be traced where ``x`` is produced
    and handed to it (``known``); None for an array it reduces with others (small) or not at all."""
    if not supported(x) or x.size <= SMALL:
        return None
    return _one_fields(x, layout(x.dtype))


def _fields(arrays: Sequence[jax.Array], lay: Layout, known: Sequence[Fields | None] = ()) -> Fields:
    """``(sum, sum of squares, min, max, zeros, all finite)`` of ``arrays``, each a vector over
    them; small float arrays of one shape are reduced as one stack. ``known[i]``, where given, are
    ``arrays[i]``'s own (:func:`summary_fields`). What follows the reductions (flushing min and max,
    the int32 zero count, the finite flag) is done once on the vectors, not once per array."""
    pieces: list[tuple[list[int], Fields]] = []
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(arrays):
        given = known[i] if i < len(known) else None
        if given is not None:
            pieces.append(([i], tuple(f[None] for f in given)))
        elif lay.kind == "float" and 0 < x.size <= min(SMALL, countable(lay.acc)):
            by_shape.setdefault(x.shape, []).append(i)
        else:
            pieces.append(([i], tuple(f[None] for f in _one_fields(x, lay))))
    for idx in by_shape.values():
        group = [arrays[i] for i in idx]
        if len(group) == 1:
            pieces.append((idx, tuple(f[None] for f in _float_fields(group[0], lay))))
            continue
        if group[0].dtype.itemsize < 4:  # rounded values: no fusing into the producers
            group = list(lax.optimization_barrier(tuple(group)))
        stack = jnp.stack([g.astype(lay.native) for g in group])
        pieces.append((idx, _float_fields(stack, lay, tuple(range(1, stack.ndim)))))
    pieces.sort(key=lambda p: jnp.issubdtype(p[1][4].dtype, jnp.integer))  # float zero counts first

    def joined(parts: list[jax.Array]) -> jax.Array:
        return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

    s1, s2, lo, hi = (joined([f[c] for _, f in pieces]) for c in range(4))
    counted = [f[4] for _, f in pieces if not jnp.issubdtype(f[4].dtype, jnp.integer)]
    zeros = joined(([joined(counted).astype(jnp.int32)] if counted else [])
                   + [f[4] for _, f in pieces[len(counted):]])
    if lay.kind == "int":
        fine = jnp.ones(lo.shape, bool)
    else:
        # A reduction over one element is that element, copied, not added: flushed as addition would
        s1, lo, hi = _flushed(s1), _flushed(lo), _flushed(hi)
        fine = jnp.isfinite(lo) & jnp.isfinite(hi)
    fields: Fields = (s1, s2, lo, hi, zeros, fine)
    order = [i for idx, _ in pieces for i in idx]
    if order != sorted(order):
        fields = tuple(f[np.argsort(np.asarray(order))] for f in fields)
    return fields


def _one_fields(x: jax.Array, lay: Layout) -> Fields:
    """The reductions of one array: :func:`_float_fields` for a float array a float sum counts,
    else by the exact distance from the minimum (ints) or with an integer zero count."""
    if lay.kind == "float" and 0 < x.size <= countable(lay.acc):
        return _float_fields(x, lay)
    v = _values(x)
    empty = jnp.zeros((), v.dtype)
    lo = jnp.min(v) if v.size else empty  # NaN-propagating: a NaN anywhere makes it NaN
    hi = jnp.max(v) if v.size else empty
    # exact distance from the minimum for integers
    d = (_unsigned(v) - _unsigned(lo)).astype(lay.acc) if lay.kind == "int" else v.astype(lay.acc)
    return jnp.sum(d), jnp.sum(d * d), lo, hi, jnp.sum(v == 0, dtype=jnp.int32)


def _group_cheap(arrays: Sequence[jax.Array], width: int, known: Sequence[Fields | None] = ()) -> jax.Array:
    """Rows ``(k, width)`` of arrays sharing one layout, from five reductions per array that
    XLA fuses with the array's producer (sum, sum of squares, min, max, zeros), so they cost
    almost nothing to compile. Exact for finite, well-conditioned arrays; the ``trusted``
    word is 0 for any other. No histogram (``sample`` is -1): see :func:`histogram`."""
    lay = layout(arrays[0].dtype)
    acc, k = lay.acc, len(arrays)
    s1, s2, lo, hi, zeros, fine = _fields(arrays, lay, known)
    n = jnp.asarray([max(math.prod(a.shape), 1) for a in arrays], acc)
    m = s1 / n
    var = jnp.maximum(s2 / n - m * m, 0)
    # Squares far above the smallest normal number: m * m and var lose no precision to underflow.
    # A zero sum of squares is exact only for a constant array: squares of tiny values underflow to 0.
    big_enough = (s2 / n >= np.finfo(acc).tiny * 2.0**40) | ((s2 == 0) & (lo == hi))
    trusted = fine & big_enough & jnp.isfinite(s1) & jnp.isfinite(s2) & ((m * m <= TRUST * var) | (m == 0))
    shift = lo if lay.kind == "int" else jnp.zeros((k,), lay.native)
    none = jnp.zeros((k,), jnp.int32)
    sizes = jnp.asarray([math.prod(a.shape) for a in arrays], jnp.int32)
    ints = jnp.stack([trusted.astype(jnp.int32), none, none, none, zeros, sizes, none - 1, none], axis=1)
    native = jnp.stack([lo, hi, shift], axis=1).astype(lay.native)
    accs = jnp.concatenate([jnp.stack([m, jnp.zeros_like(m), var], axis=1), jnp.zeros((k, BINS + 1), acc)],
                           axis=1).astype(acc)
    return _matrix(ints, jnp.zeros((k, BINS), jnp.int32), native, accs, width)


def row_width(dtypes: Sequence[Any]) -> int:
    """The stride of rows in :func:`summarize`'s and :func:`describe`'s output."""
    return max((layout(d).width for d in dtypes), default=0)


def _describe(arrays: Sequence[jax.Array], cheap: Sequence[bool],
              known: Mapping[int, Fields] | None = None) -> jax.Array:
    width = row_width([a.dtype for a in arrays])
    if not arrays:
        return jnp.zeros((0, 0), jnp.uint32)
    groups: dict[tuple[Layout, str], list[int]] = {}
    for i, a in enumerate(arrays):
        how = "cheap" if cheap[i] else ("large" if math.prod(a.shape) > SAMPLE else "small")
        groups.setdefault((layout(a.dtype), how), []).append(i)
    blocks, order = [], []
    for (_, how), idx in groups.items():
        group = [arrays[i] for i in idx]
        if how == "cheap":
            blocks.append(_group_cheap(group, width, [known.get(i) for i in idx] if known else ()))
        else:
            blocks.append(_group_exact(group, width, SAMPLE if how == "large" else _FAN))
        order += idx
    rows = jnp.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    return rows[np.argsort(np.asarray(order))] if order != sorted(order) else rows


def summarize(arrays: Sequence[jax.Array], known: Mapping[int, Fields] | None = None) -> jax.Array:
    """Rows ``(len(arrays), row_width)`` of uint32 words, traced into the inspected call:
    fused reductions (:func:`_group_cheap`) whose rows say whether they can be trusted.
    ``known[i]`` are ``arrays[i]``'s :func:`summary_fields`, if they were traced already."""
    return _describe(arrays, [True] * len(arrays), known)


def describe(arrays: Sequence[jax.Array]) -> jax.Array:
    """Exact rows of ``arrays`` (traceable; see :func:`describe_many` for concrete arrays)."""
    return _describe(arrays, [False] * len(arrays))


_describe_jit = jax.jit(describe)


def describe_many(arrays: Sequence[jax.Array]) -> jax.Array:
    """Exact rows of concrete arrays in one program (compiled per list of shapes and dtypes).
    Arrays sharded over several devices are described one by one (concatenating would gather)."""
    if any(len(getattr(getattr(a, "sharding", None), "device_set", ())) > 1 for a in arrays):
        width = row_width([a.dtype for a in arrays])
        return jnp.stack([jnp.pad(describe_exact(a), (0, width - layout(a.dtype).width)) for a in arrays])
    return _describe_jit(list(arrays))


@functools.lru_cache(maxsize=1024)
def _exact_program(shape: tuple[int, ...], dtype: np.dtype, sharding: Any, x64: bool):
    return jax.jit(_exact)


def describe_exact(x: jax.Array) -> jax.Array:
    """The exact row of one array, from a program compiled once per shape, dtype and sharding."""
    return _exact_program(tuple(x.shape), np.dtype(x.dtype), getattr(x, "sharding", None), _x64())(x)


def _histogram(x: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    lay = layout(x.dtype)
    v = _values(x)
    sample = _sample(v)
    ok = jnp.isfinite(sample) if lay.kind != "int" else jnp.ones(sample.shape, bool)
    edges, hist = _hist(sample, ok, lo, hi, lay.acc)
    return _words(hist.astype(jnp.int32), edges.astype(lay.acc))


@functools.lru_cache(maxsize=1024)
def _histogram_program(shape: tuple[int, ...], dtype: np.dtype, sharding: Any, x64: bool):
    return jax.jit(_histogram)


def histogram(x: jax.Array, stats: Stats) -> Stats:
    """``stats`` with the histogram of ``x`` filled in (bins over ``stats.min``/``max``),
    from a program compiled once per shape, dtype and sharding."""
    lay = layout(x.dtype)
    if not stats.count or stats.count == stats.nonfinite:
        return dataclasses.replace(stats, hist=(0,) * BINS, hist_edges=())
    if on_host([x]):
        return _host_hist(np.asarray(x), jax.dtypes.canonicalize_dtype(x.dtype), stats)
    lo = np.asarray(stats.min, lay.native)
    hi = np.asarray(stats.max, lay.native)
    key = (tuple(x.shape), np.dtype(x.dtype), getattr(x, "sharding", None), _x64())
    words = np.asarray(jax.device_get(_histogram_program(*key)(x, lo, hi)), np.uint32)
    hist = tuple(int(h) for h in words[:BINS].view(np.int32))
    edges = words[BINS:].view(lay.acc).tolist()
    if lay.kind == "int":
        edges = [stats.min + e for e in edges]
    return dataclasses.replace(stats, hist=hist, hist_edges=tuple(float(e) for e in edges),
                               hist_sample=SAMPLE if stats.count > SAMPLE else 0)


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


_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(Stats))


def _stats(*values: Any) -> Stats:
    """``Stats(*values)``, every field given in order, without a frozen dataclass's setattr per
    field (a call's rows are decoded every call)."""
    st = object.__new__(Stats)
    st.__dict__.update(zip(_STATS_FIELDS, values, strict=True))
    return st


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
    out = []
    if (ints[:, 6] < 0).all():  # in-call summaries only: no histogram to read
        hists: Iterable[list] = itertools.repeat([])
        edge_rows: Iterable[list] = hists
    else:
        hists, edge_rows = ints[:, len(_INTS):].tolist(), acc[:, 3:].tolist()
    for n, c, m, sd, a, b, am, f, row, edges in zip(
            ints[:, :len(_INTS)].tolist(), counts, mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(),
            abs_max.tolist(), finite.tolist(), hists, edge_rows):
        summary = n[6] < 0  # no histogram yet
        out.append(_stats(c, m, sd, a, b, am, n[4], n[1], n[2], n[3], () if summary else tuple(row),
                          0 if summary else n[6], of, () if summary or not f else tuple(edges), bool(n[0])))
    return out


def _decode(ints: list, native: list, accs: list, lay: Layout, count: int) -> Stats:
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


# -- differences ----------------------------------------------------------------
def delta_layout(dtype: Any) -> np.dtype:
    """The type of the two magnitudes in a delta row (after the int32 count)."""
    return layout(dtype).acc if not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) else np.dtype(np.float32)


def _delta(before: jax.Array, after: jax.Array) -> jax.Array:
    """``[changed, max|after - before| / 2, mean|after - before| / 2]`` as words.

    Equality is decided in the native dtype: bitwise for integers, bools and key
    data, part by part for complex, and a NaN where there was a NaN is unchanged.
    Halving keeps ``|a - b|`` from overflowing; :func:`unpack_deltas` doubles it back.
    A change to or from NaN counts as changed but adds no magnitude."""
    if jax.dtypes.issubdtype(before.dtype, jax.dtypes.prng_key):
        kb, ka = jax.random.key_data(before), jax.random.key_data(after)
        same = jnp.all(kb == ka, axis=kb.ndim - 1)
        return _words(jnp.sum(~same, dtype=jnp.int32), jnp.zeros((2,), jnp.float32))
    acc = delta_layout(before.dtype)
    n = max(math.prod(before.shape), 1)
    if jnp.issubdtype(before.dtype, jnp.inexact):
        b, a = _stored(before), _stored(after)
        same = _same(a.real, b.real) & _same(a.imag, b.imag) if jnp.iscomplexobj(a) else _same(a, b)
        h = jnp.abs(a / 2 - b / 2).astype(acc)
        h = jnp.where(same | jnp.isnan(h), 0, h)
    elif before.dtype == jnp.bool_:
        same = before == after
        h = (~same).astype(acc) / 2
    else:
        b, a = (before, after) if before.dtype.itemsize >= 4 else (before.astype(jnp.int32), after.astype(jnp.int32))
        same = a == b
        ua, ub = _unsigned(a), _unsigned(b)
        h = jnp.where(a >= b, ua - ub, ub - ua).astype(acc) / 2  # the exact distance, as unsigned
    return _words(jnp.sum(~same, dtype=jnp.int32), jnp.stack([jnp.max(h, initial=0), jnp.sum(h / n)]).astype(acc))


def _stored(x: jax.Array) -> jax.Array:
    """``x`` widened to at least 32 bits, as stored (see :func:`_values`)."""
    if x.dtype.itemsize < 4 and not jnp.iscomplexobj(x):
        return lax.optimization_barrier(x).astype(jnp.float32)
    return x


def _same(a: jax.Array, b: jax.Array) -> jax.Array:
    return (a == b) | (jnp.isnan(a) & jnp.isnan(b))


def deltas(pairs: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """Rows of :func:`_delta` for ``(before, after)`` pairs of equal shape (traceable)."""
    rows = [_delta(b, a) for b, a in pairs]
    return jnp.concatenate(rows) if rows else jnp.zeros((0,), jnp.uint32)


@functools.lru_cache(maxsize=1024)
def _delta_program(shape: tuple[int, ...], dtype: Any, sharding_b: Any, sharding_a: Any, x64: bool):
    return jax.jit(_delta)


def delta_exact(before: jax.Array, after: jax.Array) -> jax.Array:
    """:func:`_delta` of one pair, compiled once per shape, dtype and shardings."""
    key = (tuple(before.shape), before.dtype, getattr(before, "sharding", None),
           getattr(after, "sharding", None), _x64())
    return _delta_program(*key)(before, after)


def _nonfinite_masks(a: Any, b: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``(to_nan, from_nan, inf)`` element masks of the change from ``a`` (before) to ``b`` (after):
    became NaN, stopped being NaN, and changed with an Inf on either side and no NaN (complex: either
    part). ``xp`` is numpy or jax.numpy."""
    if xp.iscomplexobj(a):
        nan_a, nan_b = xp.isnan(a.real) | xp.isnan(a.imag), xp.isnan(b.real) | xp.isnan(b.imag)
        inf_a, inf_b = xp.isinf(a.real) | xp.isinf(a.imag), xp.isinf(b.real) | xp.isinf(b.imag)
        differ = (a.real != b.real) | (a.imag != b.imag)
    else:
        nan_a, nan_b, inf_a, inf_b, differ = xp.isnan(a), xp.isnan(b), xp.isinf(a), xp.isinf(b), a != b
    return nan_b & ~nan_a, nan_a & ~nan_b, ~nan_a & ~nan_b & (inf_a | inf_b) & differ


def _nonfinite_delta(before: jax.Array, after: jax.Array) -> jax.Array:
    """int32 ``[to_nan, from_nan, inf]``: :func:`_nonfinite_masks` counted on the device."""
    b, a = _stored(before), _stored(after)
    masks = _nonfinite_masks(b, a, jnp)
    return jnp.stack([jnp.sum(m, dtype=jnp.int32) for m in masks])


@functools.lru_cache(maxsize=256)
def _nonfinite_program(shape: tuple[int, ...], dtype: Any, sharding_b: Any, sharding_a: Any, x64: bool):
    return jax.jit(_nonfinite_delta)


def host_nonfinite_delta(before: Any, after: Any) -> tuple[int, int, int]:
    """``(to_nan, from_nan, inf)`` by numpy: how many elements became NaN, stopped being NaN, or changed
    with an Inf on either side (no NaN). Their magnitude is not a number: :func:`_delta` counts them as
    changed but adds nothing for a NaN, so a view must name them instead of reading ``max|Δ| 0``."""
    b, a = np.asarray(before), np.asarray(after)
    if not (b.dtype.kind in "fc" or b.dtype == ml_bfloat16) or not b.size:
        return 0, 0, 0
    if b.dtype.kind != "c":
        b, a = b.astype(np.float64), a.astype(np.float64)
    return tuple(int(np.count_nonzero(m)) for m in _nonfinite_masks(b, a, np))  # type: ignore[return-value]


def nonfinite_delta(before: Any, after: Any) -> tuple[int, int, int]:
    """:func:`host_nonfinite_delta` where numpy reads both in place (:func:`on_host`), else the same
    counts on the device (compiled once per shape, dtype and shardings); ``(0, 0, 0)`` for integers,
    bools and PRNG keys, which hold no NaN or Inf."""
    dtype = before.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or not jnp.issubdtype(dtype, jnp.inexact):
        return 0, 0, 0
    if on_host([before, after]):
        return host_nonfinite_delta(before, after)
    key = (tuple(before.shape), dtype, getattr(before, "sharding", None), getattr(after, "sharding", None), _x64())
    return tuple(int(v) for v in jax.device_get(_nonfinite_program(*key)(before, after)))  # type: ignore[return-value]


def unpack_deltas(words: np.ndarray, dtypes: Sequence[Any]) -> list[tuple[int, float, float]]:
    """Host side: ``(changed, max|Δ|, mean|Δ|)`` per pair of ``dtypes``."""
    words = np.asarray(words, np.uint32)
    out, at = [], 0
    for dtype in dtypes:
        acc = delta_layout(dtype)
        w = 1 + 2 * acc.itemsize // 4
        row = words[at:at + w]
        at += w
        mx, mn = (row[1:].view(acc).astype(np.float64) * 2).tolist()
        out.append((int(row[:1].view(np.int32)[0]), mx, mn))
    return out


# -- the host path ---------------------------------------------------------------
# On the CPU backend device memory is host memory: numpy reads an array in place (no copy,
# nothing transferred) and describes it in float64 with no compile at all, which is what a
# first call waits for. The definitions are the device programs' (and tests hold both to them).
CHUNK = 1 << 20


HOST = True  # False: describe on the device even on CPU (the tests run both paths)


def on_host(arrays: Sequence[Any]) -> bool:
    """True if every array can be read in place by numpy: numpy arrays, or jax arrays on one
    CPU device."""
    if not HOST:
        return False
    for a in arrays:
        if isinstance(a, np.ndarray):
            continue
        devices = getattr(getattr(a, "sharding", None), "device_set", None)
        if not devices or len(devices) != 1 or next(iter(devices)).platform != "cpu":
            return False
    return True


def to_host(arrays: Sequence[Any]) -> list[np.ndarray]:
    """``arrays`` in numpy: read in place where they live on the CPU (no copy), else fetched
    together (several microseconds less per array than ``jax.device_get`` on the CPU)."""
    if on_host(arrays):
        return [np.asarray(a) for a in arrays]
    return list(jax.device_get(list(arrays)))


def _chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    flat = x.reshape(-1)
    for i in range(0, flat.size, CHUNK):
        yield flat[i:i + CHUNK]


def _host_values(x: np.ndarray, dtype: Any) -> np.ndarray:
    """What :func:`_values` describes, as float64 (ints: int64 / uint64 / object for exactness)."""
    lay = layout(dtype)
    if lay.kind == "complex":  # in the array's own precision, as the device computes it
        with np.errstate(over="ignore"):
            v = np.abs(x).astype(np.float64)
    elif lay.kind == "int":
        return x.astype(np.int64) if x.dtype == np.bool_ or x.dtype.itemsize < 8 or x.dtype.kind == "i" else x
    else:
        v = x.astype(np.float64)
    if flushes_subnormals(jax.default_backend()):
        tiny = np.finfo(lay.acc).tiny
        v = np.where(np.abs(v) < tiny, np.copysign(0.0, v), v)
    return v


def host_stats(x: Any) -> Stats:
    """:class:`Stats` of a concrete array computed by numpy in float64 (see :func:`on_host`)."""
    dtype = jax.dtypes.canonicalize_dtype(x.dtype)
    a = np.asarray(x)
    if a.dtype != dtype:
        a = a.astype(dtype)
    lay = layout(dtype)
    count = a.size
    if lay.kind == "int":
        return _host_int_stats(a, dtype)
    quick = _finite_float_stats(a, dtype, lay) if lay.kind == "float" else None
    if quick is not None:
        return _host_hist(a, dtype, quick)
    nan = pos = neg = nz = nf = 0
    lo, hi = math.inf, -math.inf
    for c in _chunks(a):
        v = _host_values(c, dtype)
        fin = np.isfinite(v)
        nan += int(np.count_nonzero(np.isnan(v)))
        pos += int(np.count_nonzero(v == np.inf))
        neg += int(np.count_nonzero(v == -np.inf))
        nz += int(np.count_nonzero(v == 0))
        f = v[fin]
        nf += f.size
        if f.size:
            lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
    if not nf:
        return Stats(count, *(float("nan"),) * 5, nz, nan, pos, neg, (0,) * BINS, 0, of=_of(lay))
    # Values scaled by 2**-e (exact) lie within [-1, 1]: neither sums nor squares overflow near finfo.max.
    e = math.frexp(max(abs(lo), abs(hi)))[1]
    mean = math.fsum(float(np.sum(np.ldexp(_fin(c, dtype), -e))) for c in _chunks(a)) / nf
    var = math.fsum(float(np.sum((np.ldexp(_fin(c, dtype), -e) - mean) ** 2)) for c in _chunks(a)) / nf
    st = Stats(count, math.ldexp(mean, e), math.ldexp(math.sqrt(var), e), lo, hi, max(abs(lo), abs(hi)), nz, nan,
               pos, neg, of=_of(lay))
    return _host_hist(a, dtype, st)


_CACHED = 1 << 16


def _finite_float_stats(a: np.ndarray, dtype: Any, lay: Layout) -> Stats | None:
    """:func:`host_stats` of a real float array of at most 32 bits, in one pass over memory,
    when every value is finite and none is read differently by the device (no subnormals where
    it flushes them); ``None`` otherwise (the general path handles it).

    The array is read a cache-sized chunk at a time: each chunk's extremes, zeros, mean and
    squared distances from that mean (two passes over the chunk, in cache, in float64), merged
    into the running totals by Chan's pairwise update, which loses nothing to a far mean."""
    if a.dtype.itemsize > 4 or not a.size:
        return None
    x = a if a.dtype == np.float32 else a.astype(np.float32)  # f16/bf16 -> f32 is exact
    flat, count = x.reshape(-1), x.size
    buf = np.empty(min(count, _CACHED), np.float64)  # reused, small enough to stay in cache
    lo, hi = np.float32(np.inf), np.float32(-np.inf)
    nonzero, seen, mean, m2 = 0, 0, 0.0, 0.0
    for i in range(0, count, _CACHED):
        c = flat[i:i + _CACHED]
        c_lo, c_hi = c.min(), c.max()  # NaN if any is
        if not (np.isfinite(c_lo) and np.isfinite(c_hi)):
            return None
        lo, hi = min(lo, c_lo), max(hi, c_hi)
        nonzero += int(np.count_nonzero(c))
        d = buf[:c.size]
        np.copyto(d, c)
        k = c.size
        m = float(d.sum()) / k
        d -= m
        step, seen = m - mean, seen + k
        mean += step * k / seen
        m2 += float(np.dot(d, d)) + step * step * ((seen - k) * k / seen)
    tiny = np.float32(np.finfo(np.float32).tiny)  # computed in float32: f16/bf16 subnormals are normal there
    if flushes_subnormals(jax.default_backend()) and not (lo >= tiny or hi <= -tiny):
        below = sum(int(np.count_nonzero(np.abs(c) < tiny)) for c in _chunks(x))  # zeros and subnormals
        if below != count - nonzero:
            return None
    lo_f, hi_f = float(lo), float(hi)
    return Stats(count, mean, math.sqrt(m2 / count), lo_f, hi_f, max(abs(lo_f), abs(hi_f)),
                 count - nonzero, 0, 0, 0)


def _host_int_stats(a: np.ndarray, dtype: np.dtype) -> Stats:
    """:func:`host_stats` of an integer array: exact, from the distances to the minimum."""
    count = a.size
    if not count:
        return Stats(0, *(float("nan"),) * 5, 0, 0, 0, 0, (0,) * BINS, 0)
    bounds, nz = [], 0
    for c in _chunks(a):
        v = _host_values(c, dtype)
        nz += int(np.count_nonzero(v == 0))
        bounds.append((int(v.min()), int(v.max())))
    lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)

    def dist(c):  # exact distance from the minimum, as float64 (64-bit: as unsigned, which can't overflow)
        v = _host_values(c, dtype)
        if v.dtype.itemsize == 8:
            return (v.view(np.uint64) - np.uint64(lo % 2**64)).astype(np.float64)
        return (v - v.dtype.type(lo)).astype(np.float64)

    m = math.fsum(float(np.sum(dist(c))) for c in _chunks(a)) / count
    s1, s2 = [], []  # about m: the sums of distances (m's own rounding) and of their squares
    for c in _chunks(a):
        d = dist(c) - m
        s1.append(float(np.sum(d)))
        s2.append(float(np.dot(d, d)))
    corr = math.fsum(s1) / count
    var = math.fsum(s2) / count - corr * corr
    head = float(lo)  # lo as head + tail, both exact: the mean is rounded once
    st = Stats(count, math.fsum((head, float(lo - int(head)), m, corr)), math.sqrt(max(var, 0.0)), lo, hi,
               max(abs(lo), abs(hi)), nz, 0, 0, 0)
    return _host_hist(a, dtype, st)


def _of(lay: Layout) -> str:
    return "|z|" if lay.kind == "complex" else ""


def _fin(c: np.ndarray, dtype: Any) -> np.ndarray:
    v = _host_values(c, dtype)
    return v[np.isfinite(v)]


def _host_hist(a: np.ndarray, dtype: Any, st: Stats) -> Stats:
    """``st`` with the histogram of ``a`` (the device's bins, edges and sample positions)."""
    lay = layout(dtype)
    if not st.count or st.count == st.nonfinite:
        return dataclasses.replace(st, hist=(0,) * BINS, hist_edges=())
    sample = a.reshape(-1) if a.size <= SAMPLE else a[_positions(a.shape)]
    v = _host_values(sample, dtype)
    acc = lay.acc.type
    if lay.kind == "int":
        s = np.asarray([acc(int(e) - st.min) for e in v.tolist()], lay.acc)
        lo, hi = acc(0), acc(st.max - st.min)
    else:
        v = v[np.isfinite(v)]
        s, lo, hi = v.astype(lay.acc), acc(st.min), acc(st.max)
    edges = _host_edges(np.asarray([lo], lay.acc), np.asarray([hi], lay.acc))[0]
    idx = np.searchsorted(edges[1:BINS], s, side="right")
    hist = tuple(int(h) for h in np.bincount(idx, minlength=BINS)[:BINS])
    out = [float(e) for e in edges]
    if lay.kind == "int":
        out = [st.min + e for e in out]
    return dataclasses.replace(st, hist=hist, hist_edges=tuple(out),
                               hist_sample=sample.size if a.size > SAMPLE else 0)


def host_delta(before: Any, after: Any) -> tuple[int, float, float]:
    """:func:`_delta` by numpy, as ``(changed, max|Δ|, mean|Δ|)`` (see :func:`on_host`)."""
    if jax.dtypes.issubdtype(before.dtype, jax.dtypes.prng_key):
        kb, ka = np.asarray(jax.random.key_data(before)), np.asarray(jax.random.key_data(after))
        return int(np.count_nonzero(~np.all(kb == ka, axis=-1))), 0.0, 0.0
    b, a = np.asarray(before), np.asarray(after)
    n = max(b.size, 1)
    if b.dtype.kind in "fcV" or b.dtype == ml_bfloat16:
        if b.dtype.kind == "c":
            b, a = b.astype(np.complex128), a.astype(np.complex128)
            same = _host_same(a.real, b.real) & _host_same(a.imag, b.imag)
        else:
            b, a = b.astype(np.float64), a.astype(np.float64)
            same = _host_same(a, b)
        with np.errstate(invalid="ignore", over="ignore"):
            h = np.abs(a / 2 - b / 2)
        h = np.where(same | np.isnan(h), 0.0, h)
    elif b.dtype == np.bool_:
        same = a == b
        h = (~same).astype(np.float64) / 2
    else:
        same = a == b
        wide = b.dtype.itemsize == 8
        u = np.uint64 if wide else np.int64
        bw, aw = (b.view(np.uint64), a.view(np.uint64)) if wide and b.dtype.kind == "i" else (b.astype(u), a.astype(u))
        h = np.where(a >= b, aw - bw, bw - aw).astype(np.float64) / 2
    if not h.size:
        return 0, 0.0, 0.0
    return int(np.count_nonzero(~same)), float(h.max()) * 2, float(np.sum(h / n)) * 2


def _host_same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


ml_bfloat16 = np.dtype(jnp.bfloat16)


def host_stats_many(arrays: Sequence[Any], hist: bool = True) -> list[Stats]:
    """:func:`host_stats` of many arrays; small finite float arrays are described together
    (a dozen numpy operations in all, however many there are). ``hist=False`` leaves the
    histograms of those to :func:`histogram`, which computes them when first asked for."""
    out: list[Stats | None] = [None] * len(arrays)
    batch = []
    for i, a in enumerate(arrays):
        dtype = jax.dtypes.canonicalize_dtype(a.dtype)
        if layout(dtype).kind == "float" and 0 < a.size <= SAMPLE and np.dtype(dtype).itemsize <= 4:
            batch.append(i)
    if batch:
        flat = [np.asarray(arrays[i]).reshape(-1) for i in batch]
        sizes = np.asarray([f.size for f in flat])
        offs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        v = np.concatenate([f.astype(np.float64) for f in flat])  # (float16 and bfloat16 have no common type)
        if flushes_subnormals(jax.default_backend()):
            v = np.where(np.abs(v) < np.finfo(np.float32).tiny, np.copysign(0.0, v), v)
        bad = np.add.reduceat(~np.isfinite(v), offs) > 0
        lo, hi = np.minimum.reduceat(v, offs), np.maximum.reduceat(v, offs)
        with np.errstate(invalid="ignore", over="ignore"):  # only in the non-finite arrays, redone below
            mean = np.add.reduceat(v, offs) / sizes
            d = v - np.repeat(mean, sizes)
            var = np.add.reduceat(d * d, offs) / sizes
        zeros = np.add.reduceat(v == 0, offs)
        good = np.flatnonzero(~bad)  # non-finite arrays are described one by one below
        counts, edges = _batch_hist(v, sizes, good, lo[good], hi[good]) if hist and good.size else (None, None)
        for g, j in enumerate(good.tolist()):
            lo_, hi_ = float(lo[j]), float(hi[j])
            st = Stats(int(sizes[j]), float(mean[j]), math.sqrt(float(var[j])), lo_, hi_,
                       max(abs(lo_), abs(hi_)), int(zeros[j]), 0, 0, 0)
            if counts is not None and edges is not None:
                st = dataclasses.replace(st, hist=tuple(counts[g]), hist_edges=tuple(edges[g]))
            out[batch[j]] = st
    return [s if s is not None else host_stats(a) for s, a in zip(out, arrays)]


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 values as uint64 keys in the same order (``-0`` must already read ``+0``)."""
    b = x.view(np.uint32)
    return np.where(b >> 31, ~b, b | np.uint32(0x80000000)).astype(np.uint64)


def _host_edges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Histogram edges ``(k, BINS + 1)`` over ``[lo, hi]`` per row, in ``lo``'s type, by the
    device's operations (:func:`_hist`): non-decreasing and free of overflow."""
    acc = lo.dtype.type
    t = np.arange(BINS + 1, dtype=lo.dtype) / acc(BINS)
    half = (hi / acc(2) - lo / acc(2))[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        edges = np.minimum((lo[:, None] + half * t) + half * t, hi[:, None]).astype(lo.dtype)
    edges[:, 0], edges[:, BINS] = lo, hi
    return edges


def _batch_hist(v: np.ndarray, sizes: np.ndarray, good: np.ndarray, lo: np.ndarray, hi: np.ndarray
                ) -> tuple[list[list[int]], list[list[float]]]:
    """:func:`_host_hist` of many small, finite float32-accumulated arrays at once (``v`` their
    values end to end, ``sizes`` their lengths; ``good`` the ones to count): the same edges by
    the same float32 operations, and each element binned by one search over every array's edges,
    keyed by (array, value)."""
    acc = np.float32
    edges = _host_edges(lo.astype(acc), hi.astype(acc))
    row = np.full(sizes.size, -1)
    row[good] = np.arange(good.size)
    which = np.repeat(row, sizes)  # row of each element among ``good`` (-1: not counted)
    keep = which >= 0
    which = which[keep]
    s = v[keep].astype(acc) + acc(0)  # + 0 turns -0 into +0: they compare equal
    inner = edges[:, 1:BINS] + acc(0)
    edge_keys = (np.arange(good.size, dtype=np.uint64)[:, None] << np.uint64(32)) | _ordered(inner)
    keys = (which.astype(np.uint64) << np.uint64(32)) | _ordered(s)
    bins = np.searchsorted(edge_keys.reshape(-1), keys, side="right") - which * (BINS - 1)
    counts = np.bincount(which * BINS + bins, minlength=good.size * BINS).reshape(good.size, BINS)
    return counts.tolist(), edges.astype(np.float64).tolist()
