"""The choosers: which program describes which arrays.

:func:`summarize` (traced into the inspected call: fused, trusted or not), :func:`describe`
(exact, traceable), :func:`describe_many` (exact rows of concrete arrays: one program),
:func:`host_stats_many` (arrays numpy reads in place: numpy, summaries or exact),
:func:`describe_exact` (one array, e.g. sharded) and :func:`histogram` (a summary's histogram,
when first asked for).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inspector.model import Stats
from inspector.stats.exact import _FAN, _exact, _group_exact, _histogram
from inspector.stats.host import _host_hist, host_summaries, numpy_stats_many, on_host
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


_summarizing = threading.local()


@contextlib.contextmanager
def summaries_after_the_call() -> Iterator[None]:
    """Within it, on this thread, :func:`host_stats_many` gives each real float array of more than
    :data:`~inspector.stats.host.SUMMARIZED_ABOVE` elements what the in-call summary would
    (:func:`~inspector.stats.host.host_summary`: five reductions, the same trust rule, no histogram)
    and describes exactly only the others and those a summary can't be trusted for. A run's calls
    that run no summarizing program describe their captured arrays so (the pipeline's first-call policy)."""
    before = getattr(_summarizing, "on", False)
    _summarizing.on = True
    try:
        yield
    finally:
        _summarizing.on = before


def host_stats_many(arrays: Sequence[Any], hist: bool = True) -> list[Stats]:
    """Statistics of arrays numpy reads in place (:func:`~inspector.stats.host.on_host`): exact
    (see :func:`exact_host_stats_many`), or, inside :func:`summaries_after_the_call`, summaries
    where they can be trusted.

    Args:
        arrays: numpy arrays, or jax arrays on one CPU device.
        hist: False lets numpy leave the histograms of small arrays to :func:`histogram`.

    Returns:
        The arrays' :class:`~inspector.model.Stats`, in order.
    """
    if not getattr(_summarizing, "on", False):
        return exact_host_stats_many(arrays, hist)
    out = host_summaries(arrays)
    rest = [i for i, st in enumerate(out) if st is None]
    for i, st in zip(rest, exact_host_stats_many([arrays[i] for i in rest], hist) if rest else ()):
        out[i] = st
    return [st for st in out if st is not None]


def exact_host_stats_many(arrays: Sequence[Any], hist: bool = True) -> list[Stats]:
    """Exact statistics of arrays numpy reads in place (:func:`~inspector.stats.host.on_host`), by
    numpy in float64 (:func:`~inspector.stats.host.numpy_stats_many`), whatever their size.

    The bucketed programs (:mod:`~inspector.stats.programs`) are not used here, nor compiled for
    these arrays: on XLA:CPU they describe float arrays slower than numpy at every size from 2^12 to
    2^24 elements (3-19x; integer arrays too, but for batches of small ones, where numpy's integer
    histogram is slow: bench/bench_stats_programs.py, bench/README.md), and compiling one costs
    0.4-3.5 s of the CPU the caller's own calls run on.

    Args:
        arrays: numpy arrays, or jax arrays on one CPU device.
        hist: False lets numpy leave the histograms of small arrays to :func:`histogram`.

    Returns:
        The arrays' :class:`~inspector.model.Stats`, in order.
    """
    return numpy_stats_many(arrays, hist)
