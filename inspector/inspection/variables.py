"""Statistics of the caller's variables: described exactly (numpy in place on the CPU, else one
device program), on a worker thread while the call is traced and compiled, and remembered per set
of jax arrays (immutable: the same objects, the same statistics)."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

from inspector import stats
from inspector.background import CallerContext
from inspector.engine.signature import is_array
from inspector.model import Stats


_JAX_ARRAY = type(jax.numpy.zeros(()))


def describe_exactly(arrays: list[Any], hist: bool = True) -> list[Stats]:
    """Exact statistics of concrete arrays: in place by numpy on the CPU, else by one program
    (compiled per list of shapes and dtypes) and one transfer. ``hist=False`` lets the host
    path leave histograms to be computed when first asked for."""
    if not arrays:
        return []
    if stats.on_host(arrays):  # CPU: numpy reads them in place, nothing to compile
        return stats.host_stats_many(arrays, hist)
    rows = jax.device_get(stats.describe_many(arrays))
    return stats.unpack(rows, [a.dtype for a in arrays], [np.shape(a) for a in arrays])


def input_arrays(kind: str, args: tuple[Any, ...]) -> list[Any]:
    """The caller's variables that get statistics, in the order the plan numbers them."""
    if kind != "apply" or not args:
        return []
    leaves = jax.tree_util.tree_leaves(args[0])
    if all(type(x) is _JAX_ARRAY for x in leaves) and all(map(stats.supported_dtype, {x.dtype for x in leaves})):
        return leaves  # the usual case, checked a dtype at a time
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return []  # inside the caller's transform: nothing to describe
    return [x for x in leaves if is_array(x) and stats.supported(x)]


class InputStats:
    """Statistics of the caller's variables, remembered for the last few sets of jax arrays
    (immutable: the same objects, the same statistics). Only weak references are kept, so
    remembering never keeps an array alive."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._memo: OrderedDict[tuple[int, ...], tuple[list[weakref.ref[Any]], list[Stats]]] = OrderedDict()
        self._lock = threading.Lock()
        self.descriptions = 0  # how many sets of arrays were described (not remembered)

    def __call__(self, arrays: list[Any]) -> list[Stats]:
        key = tuple(map(id, arrays))
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None and all(r() is a for r, a in zip(hit[0], arrays)):
                self._memo.move_to_end(key)
                return hit[1]
        stats = describe_exactly(arrays)
        self.descriptions += 1
        if all(isinstance(a, jax.Array) for a in arrays):  # numpy arrays can change in place
            with self._lock:
                self._memo[key] = ([weakref.ref(a) for a in arrays], stats)
                while len(self._memo) > self.size:
                    self._memo.popitem(last=False)
        return stats

    def soon(self, arrays: list[Any]) -> Future[list[Stats]]:
        """:meth:`__call__` on a worker thread, so that describing overlaps the inspected call
        (a future already done when the arrays are remembered, or when
        :func:`background_work_allowed` says no: then they are described here and now, or across
        processes, on this thread when the result is asked for)."""
        key = tuple(map(id, arrays))
        hit = self._memo.get(key)
        if hit is not None and all(r() is a for r, a in zip(hit[0], arrays)):
            done: Future[list[Stats]] = Future()
            done.set_result(hit[1])
            return done
        if not background_work_allowed():
            if jax.process_count() > 1:  # when the result is asked for: never inside the call's trace
                return _OnDemand(lambda: self(arrays))
            done = Future()
            done.set_result(self(arrays))
            return done
        return _worker.submit(self._in_context, arrays, CallerContext())

    def _in_context(self, arrays: list[Any], context: CallerContext) -> list[Stats]:
        """:meth:`__call__` under the caller's jax options (``jax.enable_x64`` sets x64 for its thread only)."""
        with context.entered():
            return self(arrays)


_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector-stats")


class _OnDemand(Future[Any]):
    """A future computed on the thread that first asks for its result."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        super().__init__()
        self._compute = compute

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            try:
                self.set_result(self._compute())
            except Exception as e:  # noqa: BLE001 (kept in the future: result() raises it)
                self.set_exception(e)
        return super().result(timeout)


def background_work_allowed() -> bool:
    """False while jax checks this thread's traces for leaked tracers (``jax.check_tracer_leaks``),
    and in a job of several processes (``jax.distributed``).

    Its check calls ``gc.collect()``, which returns at once, collecting nothing, while another
    thread is collecting; flax leaves tracers in reference cycles, so any Python work on another
    thread (which may start a collection) can make that check report a leak that is not one.
    Across processes, every program over global arrays is a collective that each process must
    start in the same order: one on a worker, beside the call's, could start in another order on
    another process and both would wait forever."""
    return not getattr(jax.config, "jax_check_tracer_leaks", False) and jax.process_count() == 1


def wait_for_worker() -> None:
    """Returns once everything given to the describing worker so far is done."""
    _worker.submit(int).result()


input_stats = InputStats()
