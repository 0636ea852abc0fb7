"""Differences between two arrays of one shape: how many elements changed, ``max|Δ|``,
``mean|Δ|`` (:func:`deltas` traced, :func:`delta_exact` one pair, :func:`host_delta` by numpy),
and the changes to and from NaN and Inf (:func:`nonfinite_delta`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inspector.stats.host import on_host
from inspector.stats.rows import optimization_barrier, _unsigned, _words, _x64, layout


# -- differences ----------------------------------------------------------------
def delta_layout(dtype: Any) -> np.dtype:
    """The type of the two magnitudes in a delta row (after the int32 count)."""
    return layout(dtype).acc if not jnp.issubdtype(dtype, jax.dtypes.prng_key) else np.dtype(np.float32)


def _delta(before: jax.Array, after: jax.Array) -> jax.Array:
    """``[changed, max|after - before| / 2, mean|after - before| / 2]`` as words.

    Equality is decided in the native dtype: bitwise for integers, bools and key
    data, part by part for complex, and a NaN where there was a NaN is unchanged.
    Halving keeps ``|a - b|`` from overflowing; :func:`unpack_deltas` doubles it back.
    A change to or from NaN counts as changed but adds no magnitude."""
    if jnp.issubdtype(before.dtype, jax.dtypes.prng_key):
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
        out: jax.Array = optimization_barrier(x).astype(jnp.float32)
        return out
    return x


def _same(a: jax.Array, b: jax.Array) -> jax.Array:
    return (a == b) | (jnp.isnan(a) & jnp.isnan(b))


def deltas(pairs: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """Rows of :func:`_delta` for ``(before, after)`` pairs of equal shape (traceable)."""
    rows = [_delta(b, a) for b, a in pairs]
    return jnp.concatenate(rows) if rows else jnp.zeros((0,), jnp.uint32)


@functools.lru_cache(maxsize=1024)
def _delta_program(shape: tuple[int, ...], dtype: Any, sharding_b: Any, sharding_a: Any, x64: bool
                   ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    return jax.jit(_delta)


def delta_exact(before: jax.Array, after: jax.Array) -> jax.Array:
    """:func:`_delta` of one pair, compiled once per shape, dtype and shardings."""
    key = (tuple(before.shape), before.dtype, getattr(before, "sharding", None),
           getattr(after, "sharding", None), _x64())
    out: jax.Array = _delta_program(*key)(before, after)
    return out


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
def _nonfinite_program(shape: tuple[int, ...], dtype: Any, sharding_b: Any, sharding_a: Any, x64: bool
                       ) -> Callable[[jax.Array, jax.Array], jax.Array]:
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
    if jnp.issubdtype(dtype, jax.dtypes.prng_key) or not jnp.issubdtype(dtype, jnp.inexact):
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


def host_delta(before: Any, after: Any) -> tuple[int, float, float]:
    """:func:`_delta` by numpy, as ``(changed, max|Δ|, mean|Δ|)`` (see :func:`on_host`)."""
    if jnp.issubdtype(before.dtype, jax.dtypes.prng_key):
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
    same: np.ndarray = (a == b) | (np.isnan(a) & np.isnan(b))
    return same


ml_bfloat16 = np.dtype(jnp.bfloat16)
