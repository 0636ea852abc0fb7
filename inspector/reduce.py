"""Statistics computed on the device, inside the jitted call.

:func:`describe` turns a list of arrays into two small stacked arrays (floats and
counts), so that one transfer of ``O(leaves)`` scalars is all that reaches the
host; :func:`unpack` turns them into :class:`~inspector.model.Stats`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from inspector.model import Stats

BINS = 16
_FLOATS = ("mean", "std", "min", "max", "abs_max")
_COUNTS = ("count", "zeros", "nan", "posinf", "neginf")


def supported(x: object) -> bool:
    """True for arrays whose statistics make sense (numbers and bools, not PRNG keys)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)) or dtype == jnp.bfloat16


def _one(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if jnp.iscomplexobj(x):
        x = jnp.abs(x)
    wide = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    # No reshape: flattening a sharded array would gather it; reductions over every axis do not.
    x = x.astype(wide)
    finite = jnp.isfinite(x)
    n = jnp.maximum(jnp.sum(finite, dtype=jnp.int32), 1).astype(wide)
    xz = jnp.where(finite, x, 0)
    mean = jnp.sum(xz) / n
    std = jnp.sqrt(jnp.sum(jnp.where(finite, (x - mean) ** 2, 0)) / n)
    lo = jnp.min(jnp.where(finite, x, jnp.inf), initial=jnp.inf)
    hi = jnp.max(jnp.where(finite, x, -jnp.inf), initial=-jnp.inf)
    abs_max = jnp.max(jnp.abs(xz), initial=0)
    width = jnp.where(hi > lo, hi - lo, 1)
    idx = jnp.clip(jnp.floor((xz - lo) / width * BINS), 0, BINS - 1).astype(jnp.int32)
    hist = jnp.sum((idx[..., None] == jnp.arange(BINS)) & finite[..., None], axis=tuple(range(x.ndim)),
                   dtype=jnp.int32)
    floats = jnp.stack([mean, std, lo, hi, abs_max]).astype(jnp.float32)
    counts = jnp.concatenate([
        jnp.stack([
            jnp.int32(x.size),
            jnp.sum(x == 0, dtype=jnp.int32),
            jnp.sum(jnp.isnan(x), dtype=jnp.int32),
            jnp.sum(x == jnp.inf, dtype=jnp.int32),
            jnp.sum(x == -jnp.inf, dtype=jnp.int32),
        ]),
        hist,
    ])
    return floats, counts


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
    hist = ssum(((idx[:, None] == jnp.arange(BINS)) & finite[:, None]).astype(jnp.int32))
    count = lambda m: ssum(m.astype(jnp.int32))  # noqa: E731
    counts = jnp.concatenate([
        jnp.stack([jnp.asarray(sizes, jnp.int32), count(x == 0), count(jnp.isnan(x)),
                   count(x == jnp.inf), count(x == -jnp.inf)], axis=1),
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
        count, zeros, nan, posinf, neginf = c[:5]
        finite = count - nan - posinf - neginf
        mean, std, lo, hi, abs_max = f if finite else (float("nan"),) * 5
        out.append(Stats(count, mean, std, lo, hi, abs_max, zeros, nan, posinf, neginf, tuple(c[5:])))
    return out
