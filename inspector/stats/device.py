"""The choosers: which program describes which arrays.

:func:`summarize` (traced into the inspected call: fused, trusted or not), :func:`describe`
(exact, traceable), :func:`describe_many` (exact rows of concrete arrays: one program),
:func:`host_stats_many` (arrays numpy reads in place: numpy, or the bucketed programs),
:func:`describe_exact` (one array, e.g. sharded) and :func:`histogram` (a summary's histogram,
when first asked for).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inspector.model import Stats
from inspector.stats.exact import _FAN, _exact, _group_exact, _histogram
from inspector.stats import programs
from inspector.stats.host import _host_hist, numpy_stats_many, on_host
from inspector.stats.rows import BINS, Layout, SAMPLE, _x64, layout, row_width
from inspector.stats.summary import Fields, _group_cheap


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
    rows: jax.Array = _describe_jit(list(arrays))
    return rows


@functools.lru_cache(maxsize=1024)
def _exact_program(shape: tuple[int, ...], dtype: np.dtype, sharding: Any, x64: bool
                   ) -> Callable[[jax.Array], jax.Array]:
    return jax.jit(_exact)


def describe_exact(x: jax.Array) -> jax.Array:
    """The exact row of one array, from a program compiled once per shape, dtype and sharding."""
    row: jax.Array = _exact_program(tuple(x.shape), np.dtype(x.dtype), getattr(x, "sharding", None), _x64())(x)
    return row


@functools.lru_cache(maxsize=1024)
def _histogram_program(shape: tuple[int, ...], dtype: np.dtype, sharding: Any, x64: bool
                       ) -> Callable[..., jax.Array]:
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


NUMPY_UP_TO = 1 << 16
"""Elements up to which numpy describes an array in place quicker than a ready bucketed program
(measured by bench/bench_stats_programs.py; the figures are in bench/README.md)."""
COMPILE_PAYS = 1 << 24
"""Elements from which numpy takes longer to describe an array than a bucketed program takes to compile."""
PREPARE = True
"""Whether :func:`host_stats_many` compiles the programs its large arrays lack in a background
thread (for the next call, and saved for the next session)."""


def host_stats_many(arrays: Sequence[Any], hist: bool = True) -> list[Stats]:
    """Exact statistics of arrays numpy reads in place (:func:`~inspector.stats.host.on_host`).

    Arrays of at most :data:`NUMPY_UP_TO` elements are described by numpy; larger ones by the
    bucketed programs (:mod:`~inspector.stats.programs`) where those are ready (compiled in this
    process or saved on disk) or where numpy would take longer than compiling them (at least
    :data:`COMPILE_PAYS` elements); else by numpy, the missing programs being compiled in the
    background (:data:`PREPARE`) so that a later call, or session, finds them ready.

    Args:
        arrays: numpy arrays, or jax arrays on one CPU device.
        hist: False lets numpy leave the histograms of small arrays to :func:`histogram`.

    Returns:
        The arrays' :class:`~inspector.model.Stats`, in order.
    """
    large = [i for i, a in enumerate(arrays) if np.size(a) > NUMPY_UP_TO and programs.fits(a)]
    if not large:
        return numpy_stats_many(arrays, hist)
    chosen = [i for i in large if np.size(arrays[i]) >= COMPILE_PAYS or programs.ready([arrays[i]])]
    if PREPARE and len(chosen) < len(large):
        programs.prepare([arrays[i] for i in large if i not in set(chosen)], background=True)
    if not chosen:
        return numpy_stats_many(arrays, hist)
    out: list[Stats | None] = [None] * len(arrays)
    for i, st in zip(chosen, programs.describe_bucketed([arrays[i] for i in chosen])):
        out[i] = st
    rest = [i for i in range(len(arrays)) if out[i] is None]
    for i, st in zip(rest, numpy_stats_many([arrays[i] for i in rest], hist)):
        out[i] = st
    return [s for s in out if s is not None]
