"""Exact device programs: every statistic from every element, masked and overflow-safe.

:func:`_exact` describes one array, :func:`_group_exact` many arrays of one layout at once
(concatenated and reduced by segment, so the compile time is flat in the number of arrays).
Both centre the moments on a sample's median (:func:`_moments`) and add as a tree
(:func:`_by_segment`), so no sum is a long chain of additions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inspector.stats.rows import (
    BINS, SAMPLE, _matrix, _row, _sample, _unsigned, _values, _words, flat_positions, layout,
)


def _hist(sample: jax.Array, ok: jax.Array, lo: jax.Array, hi: jax.Array, acc: Any
          ) -> tuple[jax.Array, jax.Array]:
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


def _moments(d: jax.Array, keep: jax.Array, n: jax.Array, total: Any, each: Any
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
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

    def total(y: jax.Array) -> jax.Array:  # every element -> (2,)
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


def bin_edges(lo: jax.Array, hi: jax.Array, acc: Any) -> jax.Array:
    """``BINS`` equal bins from ``lo`` to ``hi`` (each ``(k,)``, in ``acc``): edges ``(k, BINS + 1)``, the
    first and last exactly ``lo`` and ``hi``."""
    t = (jnp.arange(BINS + 1, dtype=acc) / BINS)[None, :]
    half = (hi / 2 - lo / 2)[:, None]  # no overflow; (lo + h t) + h t never decreases in t
    edges = jnp.minimum((lo[:, None] + half * t) + half * t, hi[:, None])
    return edges.at[:, 0].set(lo).at[:, BINS].set(hi)


def _ghist(sample: jax.Array, sseg: jax.Array, ok: jax.Array, lo: jax.Array, hi: jax.Array, k: int, acc: Any
           ) -> tuple[jax.Array, jax.Array]:
    """:func:`_hist` per segment: edges ``(k, BINS + 1)`` and counts ``(k, BINS)``."""
    if jnp.issubdtype(sample.dtype, jnp.integer):
        s = (_unsigned(sample) - _unsigned(lo)[sseg]).astype(acc)
        lo, hi = jnp.zeros(lo.shape, acc), (_unsigned(hi) - _unsigned(lo)).astype(acc)
    else:
        s, lo, hi = sample.astype(acc), lo.astype(acc), hi.astype(acc)
    edges = bin_edges(lo, hi, acc)
    above = _ssum(((s[:, None] >= edges[sseg, 1:BINS]) & ok[:, None]).astype(jnp.int32), sseg, k)
    at = jnp.concatenate([_ssum(ok.astype(jnp.int32), sseg, k)[:, None], above, jnp.zeros((k, 1), jnp.int32)], axis=1)
    return edges, at[:, :-1] - at[:, 1:]


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
    picks = [first[i] * block + flat_positions(math.prod(np.shape(a))) for i, a in enumerate(arrays)]
    sample = v.reshape(-1)[jnp.asarray(np.concatenate(picks), jnp.int32)]
    ssizes = [p.size for p in picks]
    sseg = _seg(ssizes)
    scount = [p.size if sz > SAMPLE else 0 for p, sz in zip(picks, sizes)]

    def total(x: jax.Array) -> jax.Array:  # (rows, block, ...) -> (k, ...)
        if jnp.issubdtype(x.dtype, jnp.integer):  # counts: exact in any order
            return _ssum(jnp.sum(x, axis=1), seg, k)
        return _by_segment(_add(x, (1,)), nrows)

    def least(x: jax.Array) -> jax.Array:
        return _smin(jnp.min(x, axis=1), seg, k)

    def each(x: jax.Array) -> jax.Array:  # per-array values, per element
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


def _histogram(x: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    lay = layout(x.dtype)
    v = _values(x)
    sample = _sample(v)
    ok = jnp.isfinite(sample) if lay.kind != "int" else jnp.ones(sample.shape, bool)
    edges, hist = _hist(sample, ok, lo, hi, lay.acc)
    return _words(hist.astype(jnp.int32), edges.astype(lay.acc))
