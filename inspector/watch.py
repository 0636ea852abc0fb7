"""Watch a training run from inside its jitted step: per-step scalars of activations,
parameters, gradients and updates, recorded in a :class:`~inspector.history.History`.

Two changed lines in a training loop, and the step stays one compiled program::

    watch = fi.watch(model, capture_intermediates=C.types(nn.Dense), every=10)

    @jax.jit
    def train_step(params, opt_state, x, y, step):
        def loss_fn(params):
            logits = watch.at(step).apply({"params": params}, x)   # was: model.apply(...)
            return loss(logits, y)
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        watch.step(step, params=params, grads=grads, updates=updates)
        return optax.apply_updates(params, updates), opt_state

    watch.history.first_nonfinite()   # (step, site) or None

The statistics are computed on the device, inside ``lax.cond``s taken only at steps
divisible by ``every``; only their scalars leave it, through an unordered
``jax.debug.callback``, so the device never waits for the host's handling of them. (On the CPU
backend jax runs any program holding a host callback synchronously: the jitted call returns when
the step is done.) ``step`` may be a traced integer (one program for every step) or a Python int
(gated in Python); anything else (a float, an array of another shape) raises ``TypeError``.
A site applied several times in a step (microbatches, a scan, ``shard_map`` blocks) is recorded
once per application and merged by the history; under ``jax.vmap`` one record describes the batch.

This module holds the public API and its argument checks; what a step records and how the records
reach the history is in :mod:`inspector.watch_records`.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
import collections
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core.scope import in_filter, union_filters
from jax import lax
from jax.custom_batching import custom_vmap

from inspector._compat import capture_calls
from inspector.capture import CaptureFilter, Filter, lift, warn_unmatched
from inspector.history import History, Site
from inspector import stats
from inspector.watch_records import (_device_keep, _Emit, _emit_of, _is_int, _leaves, _Order, _captured, _Records,
                                     _Recording)
from inspector.watch_records import _scalars as _scalars  # tests read one array's Scalars through it


def _check_step(step: Any) -> Any:
    """``step`` as a Python int, or as a scalar integer array; a clear error for anything else."""
    if isinstance(step, (bool, np.bool_)):
        raise TypeError(f"fi.watch: step must be an integer (a Python int or a scalar integer array), not {step!r}")
    if isinstance(step, (int, np.integer)):
        return int(step)
    if isinstance(step, (float, np.floating)):
        raise TypeError(f"fi.watch: step must be an integer, not the float {step!r}: pass int(step) "
                        "or an integer array such as jnp.int32(step)")
    if isinstance(step, (jax.Array, np.ndarray)):
        if not jnp.issubdtype(step.dtype, jnp.integer) or np.shape(step) != ():
            raise TypeError(f"fi.watch: step must be a scalar integer array (shape (), an int dtype), not an "
                            f"array of shape {tuple(np.shape(step))} and dtype {step.dtype}")
        return step
    raise TypeError(f"fi.watch: step must be an integer (a Python int or a scalar integer array), "
                    f"not {type(step).__name__} {step!r}")


def _check_every(every: Any) -> int:
    if isinstance(every, (bool, np.bool_)) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"fi.watch: every must be a positive int (record every n-th step), not {every!r}")
    return int(every)


def _check_capture(capture: Any) -> Callable[[Any, str], bool] | None:
    if isinstance(capture, (bool, np.bool_)):
        return lift(capture_calls) if capture else None
    if not callable(capture):
        raise TypeError(f"fi.watch: capture_intermediates must be True (every __call__), False (no activations), "
                        f"a filter from inspector.capture (e.g. C.types(nn.Dense)) or a callable "
                        f"(module, method_name) -> bool, not {type(capture).__name__} {capture!r}")
    return lift(capture)




_OFF = "off"  # the mode of a step traced not to record


@dataclasses.dataclass(frozen=True)
class WatchStep:
    """A :class:`Watch` at one step (traced or not): ``apply`` in place of ``module.apply``."""

    watch: Watch
    step: Any

    def apply(self, variables: Any, *args: Any, **kwargs: Any) -> Any:
        """``module.apply(variables, *args, **kwargs)``, returning exactly what it returns, and the
        statistics of the outputs the watch's capture filter selects recorded at this step."""
        return self.watch._apply(self.step, variables, args, kwargs)

    def record(self, params: Any = None, grads: Any = None, updates: Any = None) -> None:
        """Record the statistics of every leaf of ``params``, ``grads`` and ``updates`` at this step."""
        self.watch.step(self.step, params=params, grads=grads, updates=updates)


class Watch:
    """Records per-step statistics of a module's captured activations and of the parameters,
    gradients and updates a step hands over, every ``every`` steps, into :attr:`history`."""

    def __init__(self, module: nn.Module, capture_intermediates: CaptureFilter = True, every: int = 1,
                 max_records: int = 90_000, window: int = 1_000, histograms: bool = False):
        self.every = _check_every(every)
        if not isinstance(histograms, bool):
            raise TypeError(f"fi.watch: histograms is True or False, not {histograms!r}")
        self.histograms = histograms
        self.module = module
        self.capture: Callable[[Any, str], bool] | None = _check_capture(capture_intermediates)
        self._filter = capture_intermediates
        self._warned = False
        self._copies: dict[tuple, int] = {}  # across processes: copies of one record seen (see _emit)
        self._copies_lock = threading.Lock()
        self._history = History(max_records=max_records, window=window)
        self._local = threading.local()  # .mode while a step is traced: None, _OFF or a _Recording
        self._pending: collections.deque[_Records] = collections.deque()  # returned by steps, not yet read
        self._pending_lock = threading.Lock()

    @property
    def history(self) -> History:
        """Everything recorded so far (waits for the statistics of steps already dispatched)."""
        jax.effects_barrier()
        self._drain(wait=True)
        return self._history

    def jit(self, fun: Callable[..., Any], *, step: str | int | Callable[..., Any] = "step",
            **jit_kwargs: Any) -> WatchedFunction:
        """``jax.jit(fun, **jit_kwargs)`` for a train step that uses this watch, compiled as two programs:
        at a step this watch does not record, ``fun`` exactly as written without the watch (nothing is
        described, no callback: the same bits and about the same time as an unwatched step); at a
        recorded step, ``fun`` with the statistics returned beside its outputs. The step is read on the
        host from ``fun``'s argument ``step`` (a name, a position, or a function of the arguments that
        returns it, such as ``lambda state, batch: state.step``): a Python int costs nothing; an array
        still being computed on the device is waited for. Called inside another transform (the step
        is traced), the step records as :meth:`at` does without this wrapper. ``out_shardings`` is not
        taken."""
        return WatchedFunction(self, fun, step, jit_kwargs)

    def _mode(self) -> Any:
        return getattr(self._local, "mode", None)

    def _traced(self, mode: Any, fun: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """``fun(*args, **kwargs)`` traced in ``mode`` (this thread's emits follow it)."""
        before = self._mode()
        self._local.mode = mode
        try:
            return fun(*args, **kwargs)
        finally:
            self._local.mode = before

    def _received(self, records: _Records) -> None:
        """Keeps a recording step's statistics until they are ready; reads those that are."""
        if not records.emits:
            return
        for a in records.arrays:
            if a.sharding.device_set and next(iter(a.sharding.device_set)).platform != "cpu":
                a.copy_to_host_async()  # (on the CPU the rows are read where they are)
        with self._pending_lock:
            self._pending.append(records)
        self._drain(wait=False)

    def _drain(self, wait: bool) -> None:
        """Adds to the history the statistics returned so far: those already computed, or (``wait``)
        all of them."""
        with self._pending_lock:
            while self._pending:
                records = self._pending[0]
                if not wait and not all(a.is_ready() for a in records.arrays):
                    return
                self._pending.popleft()
                for emit, packed in records.each():
                    step, rows, int_max = emit.unpack(packed)
                    emit.record(self._history, step, rows, int_max)

    def widget(self, interval: float = 0.5, window: int = 120) -> Any:
        """A live :class:`~inspector.views.history_widget.WatchWidget` of this watch's history: it
        redraws at most every ``interval`` seconds while the loop runs (never blocking it), with a
        heatmap of the latest ``window`` steps. Display it before the loop starts."""
        from inspector.views.history_widget import WatchWidget

        return WatchWidget(self._history, interval=interval, window=window, sync=lambda: self._drain(wait=False))

    def show(self, interval: float = 0.5, window: int = 120) -> Any:
        """Displays :meth:`widget` in the notebook and returns it; on a process other than 0 of a
        ``jax.distributed`` job, displays a one-line note instead."""
        from IPython.display import Pretty, display

        from inspector.views.display import elsewhere, shown_here

        w = self.widget(interval, window)
        display(w if shown_here() else Pretty(elsewhere("<fi.watch live view>")))
        return w

    def at(self, step: Any) -> WatchStep:
        """This watch at ``step``: a Python int or a scalar integer array (traced in the step);
        anything else raises ``TypeError``."""
        return WatchStep(self, _check_step(step))

    def step(self, step: Any, params: Any = None, grads: Any = None, updates: Any = None) -> None:
        """Record the statistics of every numeric leaf of ``params``, ``grads`` and ``updates`` at
        ``step`` (Python numbers, such as a float learning rate, as 0-d arrays; other leaves are
        skipped, with one warning naming them); gradients and updates also get their norm relative
        to their parameter's."""
        step = _check_step(step)
        sites: list[Site] = []
        arrays: list[jax.Array] = []
        skipped: list[str] = []
        for kind, tree in (("param", params), ("grad", grads), ("update", updates)):
            for name, a in _leaves(tree, skipped) if tree is not None else ():
                sites.append(Site(kind, name))
                arrays.append(a)
        if skipped and not self._warned:
            self._warned = True
            warnings.warn(f"fi.watch records numbers only; skipped: {', '.join(skipped)}", stacklevel=2)
        if arrays:
            self._emit(step, sites, arrays, relative=params is not None)

    def _apply(self, step: Any, variables: Any, args: tuple, kwargs: dict) -> Any:
        if self.capture is None:
            return self.module.apply(variables, *args, **kwargs)
        if "capture_intermediates" in kwargs:
            raise TypeError("the watch's capture_intermediates selects what is recorded; pass it to fi.watch")
        mutable = kwargs.get("mutable", False)
        wanted = mutable is not False and in_filter(mutable, "intermediates")
        if self._mode() is _OFF and not wanted:  # the step as written: same program, same bits
            return self.module.apply(variables, *args, **kwargs)
        kwargs.pop("mutable", None)
        order = _Order()
        with nn.intercept_methods(order):
            out, state = self.module.apply(variables, *args, mutable=union_filters(mutable, "intermediates")
                                           if mutable is not False else "intermediates",
                                           capture_intermediates=self.capture, **kwargs)
        captured = _captured(state.get("intermediates", {}), order.first)
        if not captured and isinstance(self._filter, Filter):  # a typo in a path or type: say so
            warn_unmatched(self._filter, order.ran, self.module)
        if captured:
            self._emit(step, [Site("activation", n) for n, _ in captured], [a for _, a in captured], relative=False)
        if mutable is False:
            return out
        if not wanted:
            state = type(state)({k: v for k, v in state.items() if k != "intermediates"})
        return out, state

    def _emit(self, step: Any, sites: list[Site], arrays: list[jax.Array], relative: bool) -> None:
        step = _check_step(step)
        mode = self._mode()
        if mode is _OFF:
            return
        if isinstance(step, int):
            if mode is None and step % self.every:
                return
            step = jnp.asarray(step)
        gated = mode is None and self.every > 1
        # never differentiated; the barrier keeps XLA from fusing the statistics into the arrays'
        # producers, which would change how the step itself is fused (and its bits)
        arrays = lax.optimization_barrier(lax.stop_gradient([jnp.asarray(a) for a in arrays]))
        ints = [i for i, a in enumerate(arrays) if _is_int(a)]
        emit = _emit_of(sites, arrays, ints, relative, self.histograms)
        if isinstance(mode, _Recording) and mode.takes([step, *arrays]):
            mode.add(emit, step, self._rows(arrays), self._int_max(arrays, ints))
            return
        every = self.every

        @custom_vmap
        def record(step: jax.Array, *arrays: jax.Array) -> jax.Array:
            # the element counts are those of the arrays seen here: the whole batch under vmap
            self._send(step, emit, arrays, every if gated else 1)
            return jnp.zeros((), jnp.int32)

        @record.def_vmap
        def whole_batch(axis_size: int, in_batched: list[bool], step: jax.Array, *arrays: jax.Array) -> Any:
            # under vmap the batched arrays are described whole (batch axis included), in one record
            if in_batched[0]:
                raise ValueError("fi.watch: step is batched under jax.vmap; pass one step for the whole batch "
                                 "(an unbatched scalar integer)")
            return record(step, *arrays), False

        record(step, *arrays)

    def _rows(self, arrays: Sequence[jax.Array]) -> jax.Array:
        """The rows an emit of ``arrays`` hands over (:func:`~inspector.stats.scalars.scalar_rows`, with
        histograms if asked for)."""
        rows = stats.scalar_rows(arrays)
        return stats.with_log_histograms(rows, arrays) if self.histograms else rows

    @staticmethod
    def _int_max(arrays: Sequence[jax.Array], ints: Sequence[int]) -> jax.Array | None:
        if not ints:
            return None
        int_max = [stats.int_abs_max(arrays[i]) for i in ints]
        return jnp.stack([m.astype(jnp.result_type(*int_max)) for m in int_max])

    def _send(self, step: jax.Array, emit: _Emit, arrays: Sequence[jax.Array], every: int) -> None:
        """Describe ``arrays`` and hand their rows (and integer arrays' exact abs-max) to the host
        through a callback; at steps divisible by ``every`` only."""
        # the element counts of the arrays seen here: under vmap, the whole batch's
        emit = dataclasses.replace(emit, counts=tuple(int(np.prod(np.shape(a))) for a in arrays))
        ints = list(emit.ints)
        keep = _device_keep(arrays)
        # Across processes (jax.distributed, outside shard_map) a callback of the whole rows runs on one
        # device, so one process would record: each device's copy of the (replicated) rows is sent,
        # and each process records one of its local devices' identical copies.
        partitioned = jax.process_count() > 1
        copies = jax.local_device_count() if partitioned and keep is None else 1

        def receive(step_value: Any, rows: Any, *extra: Any) -> None:
            rows = np.asarray(rows)
            if copies > 1 and not self._first_copy(id(receive), step_value, rows, extra, copies):
                return
            emit.record(self._history, int(step_value), rows, extra[0] if ints else None,
                        extra[-1] if keep is not None else None)

        def send(step_value: Any, rows: jax.Array, *extra: jax.Array) -> None:
            jax.debug.callback(receive, step_value, rows, *extra, ordered=False, partitioned=partitioned)

        if every == 1:
            whole = self._int_max(arrays, ints)
            send(step, self._rows(arrays), *([whole] if whole is not None else []),
                 *([keep] if keep is not None else []))
            return
        # One small cond per array, then one for the callback: a single cond over every array
        # measured slower than describing them all at every step (XLA:CPU).
        now = step % every == 0
        rows = [lax.cond(now, lambda a: self._rows([a])[0],
                         lambda a: jnp.zeros((emit.width,), stats.as_float32(a).dtype), a)
                for a in arrays]
        dtype = jnp.result_type(*[r.dtype for r in rows])
        extra = []
        if ints:
            idtype = jnp.result_type(*[stats.int_abs_max(arrays[i]).dtype for i in ints])
            extra.append(jnp.stack([lax.cond(now, lambda a: stats.int_abs_max(a).astype(idtype),
                                             lambda a: jnp.zeros((), idtype), arrays[i]) for i in ints]))
        if keep is not None:
            extra.append(keep)
        lax.cond(now, send, lambda *_: None, step, jnp.stack([r.astype(dtype) for r in rows]), *extra)

    def _first_copy(self, key: int, step: Any, rows: np.ndarray, extra: tuple, copies: int) -> bool:
        """Across processes each local device hands over an identical copy of a record: true for the
        first of every ``copies`` identical ones (equal records of one emit are interchangeable)."""
        k = (key, int(step), rows.tobytes(), *(np.asarray(e).tobytes() for e in extra))
        with self._copies_lock:
            seen = self._copies.get(k, 0) + 1
            if seen == copies:
                self._copies.pop(k, None)
            else:
                self._copies[k] = seen
        return seen == 1


def _step_reader(fun: Callable[..., Any], step: str | int | Callable[..., Any]) -> Callable[[tuple, dict], Any]:
    """A function of a call's ``(args, kwargs)`` that returns its step argument."""
    name = getattr(fun, "__name__", repr(fun))
    if callable(step):
        return lambda args, kwargs: step(*args, **kwargs)
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (str, int, np.integer)):
        raise TypeError(f"watch.jit: step must name {name}'s step argument (a parameter name or position) "
                        f"or be a function of its arguments returning the step, not {type(step).__name__} {step!r}")
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if isinstance(step, str):
        if params and step not in {p.name for p in params}:
            raise TypeError(f"watch.jit: {name} has no parameter named {step!r} (it takes "
                            f"{', '.join(p.name for p in params) or 'no parameters'}); pass step= the name or "
                            "position of its step argument, or a function of its arguments returning the step")
        pos: int | None = positional.index(step) if step in positional else None
        key: str | None = step
    else:
        pos, key = int(step), (positional[int(step)] if 0 <= int(step) < len(positional) else None)

    def read(args: tuple, kwargs: dict) -> Any:
        if pos is not None and pos < len(args):
            return args[pos]
        if key is not None and key in kwargs:
            return kwargs[key]
        raise TypeError(f"watch.jit: this call of {name} has no step argument {step!r} "
                        f"({len(args)} positional, keywords {sorted(kwargs)})")

    return read


def _host_step(value: Any) -> int | None:
    """The step as a Python int, or ``None`` if it is traced (a call inside another transform)."""
    from jax.core import Tracer

    value = _check_step(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Tracer):
        return None
    return int(np.asarray(value))


class WatchedFunction:
    """A train step compiled by :meth:`Watch.jit`: call it as the function it wraps."""

    def __init__(self, watch: Watch, fun: Callable[..., Any], step: str | int | Callable[..., Any],
                 jit_kwargs: dict[str, Any]):
        if "out_shardings" in jit_kwargs:
            raise TypeError("watch.jit does not take out_shardings (a recording step returns its statistics "
                            "beside your outputs): constrain the outputs inside the step with "
                            "jax.lax.with_sharding_constraint, or jit the step yourself")
        functools.update_wrapper(self, fun)
        self.watch, self.fun = watch, fun
        self._step = _step_reader(fun, step)

        @functools.wraps(fun)
        def unrecorded(*args: Any, **kwargs: Any) -> Any:
            return watch._traced(_OFF, fun, args, kwargs)

        @functools.wraps(fun)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            recording = _Recording()
            out = watch._traced(recording, fun, args, kwargs)
            return out, recording.records()

        self._unrecorded = jax.jit(unrecorded, **jit_kwargs)
        self._recorded = jax.jit(recorded, **jit_kwargs)
        self._traced_step = jax.jit(fun, **jit_kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        step = _host_step(self._step(args, kwargs))
        if step is None:
            return self._traced_step(*args, **kwargs)
        if step % self.watch.every:
            return self._unrecorded(*args, **kwargs)
        out, records = self._recorded(*args, **kwargs)
        self.watch._received(records)
        return out

    def __repr__(self) -> str:
        return f"<watch.jit of {getattr(self.fun, '__name__', self.fun)!r}, every={self.watch.every}>"


def watch(module: nn.Module, capture_intermediates: CaptureFilter = True, every: int = 1,
          max_records: int = 90_000, window: int = 1_000, histograms: bool = False) -> Watch:
    """A :class:`Watch` of ``module``: call ``watch.at(step).apply(...)`` in place of ``module.apply``
    and ``watch.step(step, params=..., grads=..., updates=...)`` inside the train step, compiled by
    :meth:`Watch.jit` (or ``jax.jit``); read ``watch.history``.

    Args:
      module: the flax module the step applies.
      capture_intermediates: which outputs are recorded, as for ``fi.apply`` (``True``: every
        ``__call__``; ``False``: no activations; a filter or a callable ``(module, method_name) -> bool``).
      every: record every ``every``-th step (a positive int).
      max_records: the history's memory budget in records (steps x sites; 76 bytes each): beyond it
        older steps are merged (:class:`~inspector.history.History`).
      window: the latest steps always kept at full resolution.
      histograms: also record, at each recorded step, every site's histogram (exact counts of its
        finite values in :data:`~inspector.history.HIST_BINS` bins: zero, and each sign's powers of
        four from 2^-32 to 2^32), read with ``history.histogram(site)``. Costs one scatter-add pass
        over every described array at recorded steps.

    Anything else raises, naming what was passed."""
    return Watch(module, capture_intermediates, every, max_records, window, histograms)
