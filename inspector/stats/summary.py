"""In-call summaries: five reductions per array traced into the inspected call.

:func:`summary_fields` / :func:`_group_cheap` give sum, sum of squares, min, max and zeros per
array, which XLA fuses with the array's producer; the row says whether it can be trusted
(finite, no overflow, a well-conditioned variance: :data:`~inspector.stats.rows.TRUST`). If not,
it is redone exactly (:mod:`inspector.stats.exact`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inspector.stats.rows import (BINS, TRUST, Layout, _flushed, _matrix, _unsigned, _values, flushes_subnormals,
                                  layout, optimization_barrier, supported)


def countable(dtype: Any) -> int:
    """The most elements whose count :func:`count_zeros` gives exactly, for a float dtype."""
    return int(2 ** (np.finfo(dtype).nmant + 1))


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
    v = optimization_barrier(x).astype(lay.native) if x.dtype.itemsize < 4 else x.astype(lay.native)
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
            group = list(optimization_barrier(tuple(group)))
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
