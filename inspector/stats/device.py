"""The choosers: which program describes which arrays.

:func:`summarize` (traced into the inspected call: fused, trusted or not), :func:`describe`
(exact, traceable), :func:`describe_many` (exact rows of concrete arrays: one program),
:func:`host_stats_many` (arrays numpy reads in place: numpy, or the bucketed programs),
:func:`describe_exact` (one array, e.g. sharded) and :func:`histogram` (a summary's histogram,
when first asked for).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inspector.model import Stats
from inspector.stats.exact import _FAN, _exact, _group_exact, _histogram
from inspector.stats import programs
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


PROGRAM_FROM = 1 << 17
"""Elements (all the arrays of one dtype and size bucket together) from which a ready bucketed
program describes them quicker than numpy in place. Measured by bench/bench_stats_programs.py (2-core
Xeon): 2^16 float32 elements as one array 1.3x numpy's time, 2^17 0.66x, 8 arrays of 2^14 0.34x."""
COMPILE_PAYS = 1 << 24
"""Elements (of one dtype and size bucket) from which numpy takes longer than compiling a bucketed
program (about 1-3 s on that CPU) and describing with it."""
PREPARE = True
"""Whether :func:`host_stats_many` compiles the programs its large arrays lack in a background
thread (for later calls, and saved for the next session), once they pay (:data:`PREPARE_AFTER_MS`)."""
PREPARE_AFTER_MS = 1000.0
"""How long numpy may spend, in this process, describing the arrays one missing program would describe
before that program is compiled in the background: about what compiling one costs (1-3.5 s of XLA:CPU
time on the 2-core Xeon, bench_stats_programs.py). So compiling never costs more than numpy already
did (a model described once per session, as its variables are, compiles nothing), and the compile,
which competes with the caller's calls on a small CPU, starts only where it pays."""
_numpy_ms: dict[programs.Key, float] = {}  # by missing program: numpy's time on its arrays so far


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
    """Exact statistics of arrays numpy reads in place (:func:`~inspector.stats.host.on_host`).

    Arrays of more than ``SAMPLE`` elements are grouped by bucketed program
    (:mod:`~inspector.stats.programs`: dtype and size bucket); a group of at least
    :data:`PROGRAM_FROM` elements in all is described by its program where that is ready (compiled
    in this process or saved on disk) or where numpy would take longer than compiling it (at least
    :data:`COMPILE_PAYS` elements). Everything else is described by numpy, and a program large
    groups lack is compiled in the background (:data:`PREPARE`) once numpy has spent
    :data:`PREPARE_AFTER_MS` on its arrays, for a later call or session.

    Args:
        arrays: numpy arrays, or jax arrays on one CPU device.
        hist: False lets numpy leave the histograms of small arrays to :func:`histogram`.

    Returns:
        The arrays' :class:`~inspector.model.Stats`, in order.
    """
    large = [i for i, a in enumerate(arrays) if np.size(a) > SAMPLE and programs.fits(a)]
    groups: dict[programs.Key, list[int]] = {}
    for key, idx in programs.groups([arrays[i] for i in large]).items():
        if sum(int(np.size(arrays[large[j]])) for j in idx) >= PROGRAM_FROM:
            groups[key] = [large[j] for j in idx]
    chosen: list[int] = []
    missing: dict[programs.Key, list[int]] = {}
    for key, idx in groups.items():
        if programs.ready_key(key) or sum(int(np.size(arrays[i])) for i in idx) >= COMPILE_PAYS:
            chosen += idx
        else:
            missing[key] = idx
    out: list[Stats | None] = [None] * len(arrays)
    if chosen:
        for i, st in zip(chosen, programs.describe_bucketed([arrays[i] for i in chosen])):
            out[i] = st
    rest = [i for i in range(len(arrays)) if out[i] is None]
    started = time.perf_counter()
    for i, st in zip(rest, numpy_stats_many([arrays[i] for i in rest], hist)):
        out[i] = st
    if missing:
        _count_numpy_time(missing, arrays, rest, (time.perf_counter() - started) * 1000)
    return [s for s in out if s is not None]


def _count_numpy_time(missing: dict[programs.Key, list[int]], arrays: Sequence[Any], described: list[int],
                      ms: float) -> None:
    """Charges each missing program its arrays' share (by elements) of numpy's ``ms``, and prepares in
    the background those whose charge reached :data:`PREPARE_AFTER_MS`."""
    total = sum(int(np.size(arrays[i])) for i in described) or 1
    due = []
    for key, idx in missing.items():
        spent = _numpy_ms.get(key, 0.0) + ms * sum(int(np.size(arrays[i])) for i in idx) / total
        _numpy_ms[key] = spent
        if spent >= PREPARE_AFTER_MS:
            due.append(arrays[idx[0]])
    if PREPARE and due:
        programs.prepare(due, background=True)
