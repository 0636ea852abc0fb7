"""Per-step scalars for the training watch (:mod:`inspector.watch`), traced into a train step.

Each array becomes ``[mean, std, abs_max, zeros, nan, inf, norm]`` (:data:`N_STATS` numbers of
one float type): one fused pass (sums of values and squares, abs-max) where that is exact enough,
by the same trust test as the in-call summaries (:data:`~inspector.stats.rows.TRUST`), else an
exact two-pass row. Also the per-site log-magnitude histograms a
:class:`~inspector.history.History` keeps (:func:`log_histograms`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inspector.history import HIST_BINS, HIST_LOW, HIST_SIDE
from inspector.stats.rows import TRUST
from inspector.stats.summary import count_zeros, countable

_finfo: Callable[[Any], Any] = jnp.finfo  # typed: jax leaves these untyped
_iinfo: Callable[[Any], Any] = jnp.iinfo

N_STATS = 7  # mean, std, abs_max, zeros, nan, inf, norm (+ the element count, known at trace time)


def as_float32(x: jax.Array) -> jax.Array:
    """``x`` as floats of at least 32 bits (``|z|`` for complex), the precision the statistics use."""
    if jnp.iscomplexobj(x):
        x = jnp.abs(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or _finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x.reshape(-1)


STACKED = 1 << 16  # arrays of at most this many elements are described stacked with others of their size


def _exact_row_scalars(m: jax.Array) -> jax.Array:
    """Rows of :func:`_row_scalars` for each row of ``m``, in two passes scaled by a power of two near the
    row's abs-max: no overflow, centred variance."""
    fin = jnp.isfinite(m)
    nf = jnp.sum(fin, axis=1, dtype=jnp.int32)
    amax = jnp.max(jnp.where(fin, jnp.abs(m), 0), axis=1)
    _, e = jnp.frexp(amax)
    scale = jnp.ldexp(jnp.ones_like(amax), e - 1)[:, None]  # a power of two in (amax / 2, amax]: |m / scale| < 2
    # m / scale as two exact multiplications: XLA:CPU divides by multiplying with 1 / scale, which
    # is subnormal (flushed to 0) for a scale near the largest float
    h = (e - 1) // 2
    s = jnp.where(fin, (m * jnp.ldexp(jnp.ones_like(amax), -h)[:, None])
                  * jnp.ldexp(jnp.ones_like(amax), h - (e - 1))[:, None], 0)
    n = jnp.maximum(nf, 1).astype(m.dtype)
    mean = jnp.sum(s, axis=1) / n
    var = jnp.sum(jnp.where(fin, (s - mean[:, None]) ** 2, 0), axis=1) / n
    norm = jnp.sqrt(jnp.sum(s * s, axis=1)) * scale[:, 0]

    def count(b: jax.Array) -> jax.Array:
        return jnp.sum(b, axis=1).astype(m.dtype)

    return jnp.stack([mean * scale[:, 0], jnp.sqrt(var) * scale[:, 0], amax, count(m == 0),
                      count(jnp.isnan(m)), count(jnp.isinf(m)), norm], axis=1)


def _row_scalars(m: jax.Array) -> jax.Array:
    """``[mean, std, abs_max, zeros, nan, inf, norm]`` of each row of the float matrix ``m`` (traceable):
    mean, population std, abs-max and L2 norm over the finite elements; exact counts of zeros, NaNs
    and infinities (as floats). One fused pass (sums of values and squares, abs-max) where that is
    exact enough: finite sums, squares well above underflow and a mean within ``sqrt(TRUST)`` standard
    deviations of zero; otherwise, for the whole matrix, :func:`_exact_row_scalars` where a row needs it."""
    k, n = m.shape
    if n == 0:
        return jnp.zeros((k, N_STATS), m.dtype)
    # Float reductions only (an integer count costs XLA:CPU several float sums): finite sums mean no
    # NaN or Inf, and the zeros are counted as in reduce.
    s1, s2, amax = jnp.sum(m, axis=1), jnp.sum(m * m, axis=1), jnp.max(jnp.abs(m), axis=1)
    mean = s1 / n
    var = jnp.maximum(s2 / n - mean * mean, 0)
    zeros = count_zeros(m, (1,)) if n <= countable(m.dtype) else jnp.sum(m == 0, axis=1).astype(m.dtype)
    none = jnp.zeros((k,), m.dtype)
    fast = jnp.stack([mean, jnp.sqrt(var), amax, zeros, none, none, jnp.sqrt(s2)], axis=1)
    tiny = np.finfo(m.dtype).tiny * 2.0**40
    trusted = (jnp.isfinite(s1) & jnp.isfinite(s2) & jnp.isfinite(amax)
               & ((s2 / n >= tiny) | (amax == 0)) & ((mean * mean <= TRUST * var) | (mean == 0)))
    rows: jax.Array = lax.cond(jnp.all(trusted), lambda: fast,
                               lambda: jnp.where(trusted[:, None], fast, _exact_row_scalars(m)))
    return rows


def array_stats(x: jax.Array) -> jax.Array:
    """``[mean, std, abs_max, zeros, nan, inf, norm]`` of one array (traceable; see :func:`_row_scalars`)."""
    v = as_float32(x)
    return _row_scalars(v.reshape(1, -1))[0]


def scalar_rows(arrays: Sequence[jax.Array]) -> jax.Array:
    """``(len(arrays), N_STATS)`` rows (float32; float64 where an array is float64 under x64). Small
    arrays of one size and dtype are described as one stacked matrix: XLA:CPU pays several
    microseconds per reduction, whatever its size."""
    if not arrays:
        return jnp.zeros((0, N_STATS), jnp.float32)
    values = [as_float32(a) for a in arrays]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, v in enumerate(values):
        key = (v.size, v.dtype) if 0 < v.size <= STACKED else (i,)
        groups.setdefault(key, []).append(i)
    dtype = jnp.result_type(*[v.dtype for v in values])
    out: list[Any] = [None] * len(values)
    for idx in groups.values():
        m = jnp.stack([values[i] for i in idx]) if len(idx) > 1 else values[idx[0]].reshape(1, -1)
        rows = _row_scalars(m).astype(dtype)
        for j, i in enumerate(idx):
            out[i] = rows[j]
    return jnp.stack(out)


def _log_bins(x: jax.Array) -> jax.Array:
    """Each element's bin (:data:`~inspector.history.HIST_BINS`: zero, or sign and the power of four
    of its magnitude), int32, -1 for NaN and Inf. Integers are binned by their exact bit length (no
    float rounding)."""
    if jnp.iscomplexobj(x):
        x = jnp.abs(x)
    x = x.reshape(-1)
    if jnp.issubdtype(x.dtype, jnp.integer):
        neg = x < 0 if jnp.issubdtype(x.dtype, jnp.signedinteger) else jnp.zeros(x.shape, bool)
        u = jnp.uint64 if _iinfo(x.dtype).bits == 64 else jnp.uint32
        mag = jnp.where(neg, (-(x + 1)).astype(u) + 1, x.astype(u))  # |INT_MIN| without overflow
        e = (np.iinfo(u).bits - lax.clz(mag)).astype(jnp.int32)  # |x| in [2^(e-1), 2^e)
        finite = jnp.ones(x.shape, bool)
    else:
        if _finfo(x.dtype).bits < 32:
            x = x.astype(jnp.float32)  # exact: every bf16/f16/f8 value is a float32
        _, e = jnp.frexp(x)
        neg, mag, finite = x < 0, jnp.abs(x), jnp.isfinite(x)
    k = jnp.clip((e - 1 + HIST_LOW) // 2, 0, HIST_SIDE - 1)
    b = jnp.where(mag == 0, HIST_SIDE, jnp.where(neg, HIST_SIDE - 1 - k, HIST_SIDE + 1 + k))
    return jnp.where(finite, b, -1).astype(jnp.int32)


def log_histograms(arrays: Sequence[jax.Array], dtype: Any) -> jax.Array:
    """``(len(arrays), 2 * HIST_BINS)``: each array's exact count of finite elements per bin as two
    ``dtype`` numbers, ``count >> 12`` then ``count & 4095`` (exact in float32 up to 2^31 per bin)."""
    rows = []
    for a in arrays:
        b = _log_bins(a)
        counts = jnp.zeros(HIST_BINS + 1, jnp.int32).at[b].add(1, mode="drop")[:HIST_BINS]  # -1: dropped
        rows.append(jnp.concatenate([(counts >> 12).astype(dtype), (counts & 4095).astype(dtype)]))
    return jnp.stack(rows) if rows else jnp.zeros((0, 2 * HIST_BINS), dtype)


def with_log_histograms(rows: jax.Array, arrays: Sequence[jax.Array]) -> jax.Array:
    """``rows`` (:func:`scalar_rows`) with each array's histogram columns appended."""
    return jnp.concatenate([rows, log_histograms(arrays, rows.dtype)], axis=1)


def int_abs_max(x: jax.Array) -> jax.Array:
    """The exact abs-max of an integer array, as uint32 (uint64 for 64-bit integers): no float
    rounding, and ``|INT_MIN|`` without overflow."""
    u = jnp.uint64 if _iinfo(x.dtype).bits == 64 else jnp.uint32
    if x.size == 0:
        return jnp.zeros((), u)
    hi = jnp.max(x)
    if jnp.issubdtype(x.dtype, jnp.unsignedinteger):
        return hi.astype(u)
    lo = jnp.min(x)
    neg = jnp.where(lo < 0, (-(lo + 1)).astype(u) + 1, 0).astype(u)  # -(lo + 1) never overflows
    return jnp.maximum(jnp.where(hi > 0, hi.astype(u), 0).astype(u), neg)
