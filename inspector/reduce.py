"""Statistics computed on the device, inside the jitted call.

:func:`describe` turns a list of arrays into two small stacked arrays (floats and
counts), so that one transfer of ``O(leaves)`` scalars is all that reaches the
host; :func:`unpack` turns them into :class:`~inspector.model.Stats`.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from inspector.model import Stats

BINS = 16
_FLOATS = ("mean", "std", "min", "max", "abs_max")
_COUNTS = ("count", "zeros", "nan", "posinf", "neginf", "sample")


def supported(x: object) -> bool:
    """True for arrays whose statistics make sense (numbers and bools, not PRNG keys)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)) or dtype == jnp.bfloat16


def _wide(x: jax.Array) -> jax.Array:
    if jnp.iscomplexobj(x):
        x = jnp.abs(x)
    return x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32)


def _hist(x: jax.Array, finite: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Counts of finite ``x`` in ``BINS`` equal bins spanning ``[lo, hi]``."""
    width = jnp.where(hi > lo, hi - lo, 1)
    idx = jnp.clip(jnp.floor((jnp.where(finite, x, lo) - lo) / width * BINS), 0, BINS - 1).astype(jnp.int32)
    bins = jnp.arange(BINS).reshape((1,) * x.ndim + (BINS,))  # same rank: fine under rank_promotion='raise'
    return jnp.sum((idx[..., None] == bins) & finite[..., None], axis=tuple(range(x.ndim)),
                   dtype=jnp.int32)


def _exact(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every statistic from every element, non-finite values counted and excluded."""
    finite = jnp.isfinite(x)
    n = jnp.maximum(jnp.sum(finite, dtype=jnp.int32), 1).astype(x.dtype)
    xz = jnp.where(finite, x, 0)
    mean = jnp.sum(xz) / n
    std = jnp.sqrt(jnp.sum(jnp.where(finite, (x - mean) ** 2, 0)) / n)
    lo = jnp.min(jnp.where(finite, x, jnp.inf), initial=jnp.inf)
    hi = jnp.max(jnp.where(finite, x, -jnp.inf), initial=-jnp.inf)
    abs_max = jnp.max(jnp.abs(xz), initial=0)
    floats = jnp.stack([mean, std, lo, hi, abs_max]).astype(jnp.float32)
    counts = jnp.concatenate([
        jnp.stack([
            jnp.int32(x.size),
            jnp.sum(x == 0, dtype=jnp.int32),
            jnp.sum(jnp.isnan(x), dtype=jnp.int32),
            jnp.sum(x == jnp.inf, dtype=jnp.int32),
            jnp.sum(x == -jnp.inf, dtype=jnp.int32),
            jnp.int32(0),
        ]),
        _hist(x, finite, lo, hi),
    ])
    return floats, counts


SAMPLE = 4096  # histograms of larger arrays count this many elements at fixed quasi-random positions


@functools.lru_cache(maxsize=256)
def _sample_positions(shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """``SAMPLE`` distinct, evenly spread positions in an array of ``shape`` (a golden-ratio sequence:
    no stride that could line up with an axis), as one index array per axis."""
    size = math.prod(shape)
    flat = np.unique((np.arange(SAMPLE) * 0.6180339887498949 % 1.0 * size).astype(np.int64))
    return tuple(i.astype(np.int32) for i in np.unravel_index(flat, shape))


@jax.jit  # nested in the caller's trace: arrays of one shape and dtype are traced and lowered once
def _one(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Statistics of one array. Reading a large array costs a few passes, so the common case is
    cheap: sum, sum of squares, min and max; when they are all finite there is no NaN/Inf to count,
    zeros are counted only if ``min |x|`` is 0, and the histogram of an array over ``SAMPLE``
    elements is drawn from a sample (its size in the ``sample`` count). Anything non-finite
    (or a sum that overflows) switches to :func:`_exact`, so counts of NaN/Inf are always exact."""
    x = _wide(x)
    if x.size <= SAMPLE:
        return _exact(x)
    # No reshape: flattening a sharded array would gather it; reductions over every axis do not.
    shift = x[(0,) * x.ndim]  # centring on any element keeps the one-pass variance accurate
    d = x - shift
    s, ss, lo, hi = jnp.sum(d), jnp.sum(d * d), jnp.min(x), jnp.max(x)

    def no_zeros(x):
        return jnp.int32(0)

    def count_zeros(x):
        return lax.cond(jnp.min(jnp.abs(x)) == 0, lambda x: jnp.sum(x == 0, dtype=jnp.int32), no_zeros, x)

    def cheap(x):
        mean = s / x.size
        std = jnp.sqrt(jnp.maximum(ss / x.size - mean * mean, 0))
        zeros = lax.cond((lo <= 0) & (hi >= 0), count_zeros, no_zeros, x)
        sample = x[_sample_positions(x.shape)]
        floats = jnp.stack([shift + mean, std, lo, hi, jnp.maximum(-lo, hi)]).astype(jnp.float32)
        counts = jnp.concatenate([
            jnp.stack([jnp.int32(x.size), zeros, jnp.int32(0), jnp.int32(0), jnp.int32(0),
                       jnp.int32(sample.size)]),
            _hist(sample, jnp.ones(sample.shape, bool), lo, hi),
        ])
        return floats, counts

    return lax.cond(jnp.isfinite(s + ss + lo + hi), cheap, _exact, x)


SMALL = 4096  # leaves up to this size are described together, in one set of segment reductions


def _batched(arrays: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """:func:`_one` for many small arrays at once (keeps compile time flat in the leaf count)."""
    n = len(arrays)
    sizes = [int(a.size) for a in arrays]
    seg = jnp.asarray(np.repeat(np.arange(n), sizes), jnp.int32)
    x = jnp.concatenate([jnp.abs(a).reshape(-1) if jnp.iscomplexobj(a) else a.reshape(-1)
                         for a in arrays]).astype(jnp.float32) if sum(sizes) else jnp.zeros((0,), jnp.float32)
    ssum = lambda v: jax.ops.segment_sum(v, seg, num_segments=n)  # noqa: E731
    finite = jnp.isfinite(x)
    nf = ssum(finite.astype(jnp.int32))
    xz = jnp.where(finite, x, 0)
    mean = ssum(xz) / jnp.maximum(nf, 1)
    std = jnp.sqrt(ssum(jnp.where(finite, (x - mean[seg]) ** 2, 0)) / jnp.maximum(nf, 1))
    lo = jax.ops.segment_min(jnp.where(finite, x, jnp.inf), seg, num_segments=n)
    hi = jax.ops.segment_max(jnp.where(finite, x, -jnp.inf), seg, num_segments=n)
    abs_max = jnp.maximum(jax.ops.segment_max(jnp.abs(xz), seg, num_segments=n), 0)
    width = jnp.where(hi > lo, hi - lo, 1)
    idx = jnp.clip(jnp.floor((xz - lo[seg]) / width[seg] * BINS), 0, BINS - 1).astype(jnp.int32)
    hist = ssum(((idx[:, None] == jnp.arange(BINS)[None, :]) & finite[:, None]).astype(jnp.int32))
    count = lambda m: ssum(m.astype(jnp.int32))  # noqa: E731
    counts = jnp.concatenate([
        jnp.stack([jnp.asarray(sizes, jnp.int32), count(x == 0), count(jnp.isnan(x)),
                   count(x == jnp.inf), count(x == -jnp.inf), jnp.zeros(n, jnp.int32)], axis=1),
        hist,
    ], axis=1)
    return jnp.stack([mean, std, lo, hi, abs_max], axis=1).astype(jnp.float32), counts


def describe(arrays: Sequence[jax.Array], batch_small: bool = True) -> tuple[jax.Array, jax.Array]:
    """Stacked statistics of ``arrays`` (traceable): ``(floats[n, 5], counts[n, 5 + BINS])``.

    ``batch_small=False`` describes each array on its own: use it when arrays may be
    sharded over several devices, since concatenating them would gather the shards.
    """
    if not arrays:
        return jnp.zeros((0, len(_FLOATS)), jnp.float32), jnp.zeros((0, len(_COUNTS) + BINS), jnp.int32)
    small = [i for i, a in enumerate(arrays)
             if batch_small and a.size <= SMALL and a.dtype != jnp.float64]
    large = [i for i in range(len(arrays)) if i not in set(small)]
    floats, counts = [], []
    if small:
        f, c = _batched([arrays[i] for i in small])
        floats.append(f)
        counts.append(c)
    for i in large:
        f, c = _one(arrays[i])
        floats.append(f[None])
        counts.append(c[None])
    order = np.argsort(np.asarray(small + large))  # back to the callers' order
    return jnp.concatenate(floats)[order], jnp.concatenate(counts)[order]


def deltas(pairs: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """Per pair ``(before, after)`` of equal shape: ``[changed, max|Δ|, mean|Δ|]`` (traceable)."""
    if not pairs:
        return jnp.zeros((0, 3), jnp.float32)
    rows = []
    for before, after in pairs:
        b = before.astype(jnp.float32)
        a = after.astype(jnp.float32)
        same = (a == b) | (jnp.isnan(a) & jnp.isnan(b))
        d = jnp.where(same, 0, jnp.abs(a - b))
        rows.append(jnp.stack([
            jnp.sum(~same).astype(jnp.float32),
            jnp.max(d, initial=0),
            jnp.sum(d) / max(a.size, 1),
        ]))
    return jnp.stack(rows)


def unpack(floats: np.ndarray, counts: np.ndarray) -> list[Stats]:
    """Host-side: the rows of :func:`describe`'s output as :class:`Stats`."""
    out = []
    for f, c in zip(np.asarray(floats).tolist(), np.asarray(counts).tolist()):
        count, zeros, nan, posinf, neginf, sample = c[:len(_COUNTS)]
        finite = count - nan - posinf - neginf
        mean, std, lo, hi, abs_max = f if finite else (float("nan"),) * 5
        out.append(Stats(count, mean, std, lo, hi, abs_max, zeros, nan, posinf, neginf,
                         tuple(c[len(_COUNTS):]), sample))
    return out
