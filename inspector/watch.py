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
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core.scope import in_filter, union_filters
from jax import lax
from jax.custom_batching import custom_vmap

from inspector._compat import capture_calls, is_lifted_wrapper_call, shape_pass
from inspector.capture import CaptureFilter, lift
from inspector.history import History, Scalars, Site
from inspector.names import format_key, format_path
from inspector.reduce import count_zeros, countable

N_STATS = 7  # mean, std, abs_max, zeros, nan, inf, norm (+ the element count, known at trace time)


def _values(x: jax.Array) -> jax.Array:
    """``x`` as floats of at least 32 bits (``|z|`` for complex), the precision the statistics use."""
    if jnp.iscomplexobj(x):
        x = jnp.abs(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x.reshape(-1)


TRUST = 64.0  # one pass is trusted while mean^2 <= TRUST * variance (as inspector.reduce's summaries)


def _exact_stats(v: jax.Array) -> jax.Array:
    """Two passes over ``v`` scaled by a power of two near its abs-max: no overflow, centred variance."""
    fin = jnp.isfinite(v)
    nf = jnp.sum(fin, dtype=jnp.int32)
    amax = jnp.max(jnp.where(fin, jnp.abs(v), 0))
    _, e = jnp.frexp(amax)
    scale = jnp.ldexp(jnp.ones((), v.dtype), e - 1)  # a power of two in (amax / 2, amax]: |v / scale| < 2
    s = jnp.where(fin, v / scale, 0)
    n = jnp.maximum(nf, 1).astype(v.dtype)
    m = jnp.sum(s) / n
    var = jnp.sum(jnp.where(fin, (s - m) ** 2, 0)) / n
    norm = jnp.sqrt(jnp.sum(s * s)) * scale
    return jnp.stack([m * scale, jnp.sqrt(var) * scale, amax, jnp.sum(v == 0).astype(v.dtype),
                      jnp.sum(jnp.isnan(v)).astype(v.dtype), jnp.sum(jnp.isinf(v)).astype(v.dtype), norm])


def array_stats(x: jax.Array) -> jax.Array:
    """``[mean, std, abs_max, zeros, nan, inf, norm]`` of one array (traceable): mean, population
    std, abs-max and L2 norm over the finite elements; exact counts of zeros, NaNs and infinities
    (as floats). One fused pass (sums of values and squares) where that is exact enough: finite sums,
    squares well above underflow and a mean within ``sqrt(TRUST)`` standard deviations of zero;
    otherwise :func:`_exact_stats` (two passes, overflow-safe, centred)."""
    v = _values(x)
    if v.size == 0:
        return jnp.zeros((N_STATS,), v.dtype)
    # Float reductions only (an integer count costs XLA:CPU several float sums): if the sums,
    # min and max are finite there is no NaN or Inf, and the zeros are counted as in reduce.
    s1, s2, lo, hi = jnp.sum(v), jnp.sum(v * v), jnp.min(v), jnp.max(v)
    n = jnp.asarray(v.size, v.dtype)
    m = s1 / n
    var = jnp.maximum(s2 / n - m * m, 0)
    zeros = count_zeros(v) if v.size <= countable(v.dtype) else jnp.sum(v == 0).astype(v.dtype)
    fast = jnp.stack([m, jnp.sqrt(var), jnp.maximum(jnp.abs(lo), jnp.abs(hi)), zeros,
                      jnp.zeros((), v.dtype), jnp.zeros((), v.dtype), jnp.sqrt(s2)])
    tiny = np.finfo(v.dtype).tiny * 2.0**40
    trusted = (jnp.isfinite(s1) & jnp.isfinite(s2) & jnp.isfinite(lo) & jnp.isfinite(hi)
               & ((s2 / n >= tiny) | ((s2 == 0) & (lo == hi))) & ((m * m <= TRUST * var) | (m == 0)))
    return lax.cond(trusted, lambda: fast, lambda: _exact_stats(v))


def _no_stats(x: jax.Array) -> jax.Array:
    """The row :func:`array_stats` gives, where nothing is described (zeros, its dtype)."""
    return jnp.zeros((N_STATS,), _values(x).dtype)


def _stack(arrays: Sequence[jax.Array]) -> jax.Array:
    """``(len(arrays), N_STATS)`` float32 rows (float64 where an array is float64 under x64)."""
    rows = [array_stats(a) for a in arrays]
    dtype = jnp.result_type(*[r.dtype for r in rows]) if rows else jnp.float32
    return jnp.stack([r.astype(dtype) for r in rows]) if rows else jnp.zeros((0, N_STATS), jnp.float32)


def _int_abs_max(x: jax.Array) -> jax.Array:
    """The exact abs-max of an integer array, as uint32 (uint64 for 64-bit integers): no float
    rounding, and ``|INT_MIN|`` without overflow."""
    u = jnp.uint64 if jnp.iinfo(x.dtype).bits == 64 else jnp.uint32
    if x.size == 0:
        return jnp.zeros((), u)
    hi = jnp.max(x)
    if jnp.issubdtype(x.dtype, jnp.unsignedinteger):
        return hi.astype(u)
    lo = jnp.min(x)
    neg = jnp.where(lo < 0, (-(lo + 1)).astype(u) + 1, 0).astype(u)  # -(lo + 1) never overflows
    return jnp.maximum(jnp.where(hi > 0, hi.astype(u), 0).astype(u), neg)


def _is_int(x: Any) -> bool:
    return bool(jnp.issubdtype(x.dtype, jnp.integer))


def _scalars(row: np.ndarray, count: int, ratio: float | None, abs_max: int | None = None) -> Scalars:
    """One site's :class:`Scalars` from its row; ``abs_max`` (an int) replaces the row's for integer arrays."""
    mean, std, amax, zeros, nan, inf, norm = (float(v) for v in row)
    return Scalars(mean=mean, std=std, abs_max=amax if abs_max is None else abs_max,
                   zero_frac=zeros / count if count else 0.0,
                   nan=int(nan), inf=int(inf), norm=norm, ratio=ratio, count=count)


def _numeric(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray)) and (jnp.issubdtype(x.dtype, jnp.number)
                                                        and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key))


def _leaves(tree: Any, skipped: list[str] | None = None) -> list[tuple[str, Any]]:
    """``(variable path, array)`` of a tree's numeric leaves, in flattening order; Python and numpy
    numbers (not bools) become 0-d arrays. The paths of other leaves (strings, bools, objects; not
    arrays of bools or keys) are appended to ``skipped``."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        if isinstance(leaf, (int, float, complex, np.number)) and not isinstance(leaf, (bool, np.bool_)):
            leaf = jnp.asarray(leaf)
        if _numeric(leaf):
            out.append((format_path(names), leaf))
        elif skipped is not None and not isinstance(leaf, (jax.Array, np.ndarray)):
            skipped.append(f"{format_path(names)} ({type(leaf).__name__})")
    return out


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


def _device_keep(arrays: Sequence[jax.Array]) -> jax.Array | None:
    """Inside a ``shard_map`` every device calls the callback with its own block: per array, whether this
    device's copy is the one to record (index 0 along the manual axes the array does not vary over,
    so a replicated block is recorded once); ``None`` outside ``shard_map``."""
    manual = tuple(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()))
    if not manual:
        return None
    keep = []
    for a in arrays:
        mat = getattr(jax.typeof(a), "manual_axis_type", None)
        varying = getattr(mat, "varying", frozenset(manual))
        first = jnp.ones((), bool)
        for axis in manual:
            if axis not in varying:
                first = first & (lax.axis_index(axis) == 0)
        keep.append(first)
    return jnp.stack(keep)


class _Order:
    """A method interceptor that notes the order in which bound modules' methods are first
    called (names only, so it is safe inside lifted transforms)."""

    def __init__(self) -> None:
        self.first: dict[tuple[tuple[str, ...], str], int] = {}

    def __call__(self, next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        y = next_fun(*args, **kwargs)
        module, name = context.module, context.method_name
        if not (name == "setup" or is_lifted_wrapper_call(name) or module.scope is None or shape_pass()):
            self.first.setdefault((tuple(module.path), name), len(self.first))
        return y


def _captured(inter: Any, order: dict[tuple[tuple[str, ...], str], int]) -> list[tuple[str, jax.Array]]:
    """``(site name, array)`` of every captured value, calls in execution order."""
    found: list[tuple[int, int, str, jax.Array]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        for k, v in node.items():
            if isinstance(v, tuple):  # a method's captured values, one per call
                rank = order.get((path, k), len(order))
                for call, out in enumerate(v):
                    leaves = [leaf for leaf in jax.tree.leaves(out) if _numeric(leaf)]
                    key = format_key(path, k, call)
                    for i, leaf in enumerate(leaves):
                        found.append((rank, call, key if len(leaves) == 1 else f"{key}.{i}", leaf))
            elif hasattr(v, "items"):
                walk(v, path + (k,))

    walk(inter, ())
    found.sort(key=lambda f: (f[0], f[1]))
    return [(name, a) for _, _, name, a in found]


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

    def __init__(self, module: nn.Module, capture_intermediates: CaptureFilter = True, every: int = 1):
        self.every = _check_every(every)
        self.module = module
        self.capture: Callable[[Any, str], bool] | None = _check_capture(capture_intermediates)
        self._warned = False
        self._copies: dict[tuple, int] = {}  # across processes: copies of one record seen (see _emit)
        self._copies_lock = threading.Lock()
        self._history = History()

    @property
    def history(self) -> History:
        """Everything recorded so far (waits for the statistics of steps already dispatched)."""
        jax.effects_barrier()
        return self._history

    def widget(self, interval: float = 0.5, window: int = 120) -> Any:
        """A live :class:`~inspector.views.history_widget.WatchWidget` of this watch's history: it
        redraws at most every ``interval`` seconds while the loop runs (never blocking it), with a
        heatmap of the latest ``window`` steps. Display it before the loop starts."""
        from inspector.views.history_widget import WatchWidget

        return WatchWidget(self._history, interval=interval, window=window)

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
        mutable = kwargs.pop("mutable", False)
        wanted = mutable is not False and in_filter(mutable, "intermediates")
        order = _Order()
        with nn.intercept_methods(order):
            out, state = self.module.apply(variables, *args, mutable=union_filters(mutable, "intermediates")
                                           if mutable is not False else "intermediates",
                                           capture_intermediates=self.capture, **kwargs)
        captured = _captured(state.get("intermediates", {}), order.first)
        if captured:
            self._emit(step, [Site("activation", n) for n, _ in captured], [a for _, a in captured], relative=False)
        if mutable is False:
            return out
        if not wanted:
            state = type(state)({k: v for k, v in state.items() if k != "intermediates"})
        return out, state

    def _emit(self, step: Any, sites: list[Site], arrays: list[jax.Array], relative: bool) -> None:
        step = _check_step(step)
        if isinstance(step, int):
            if step % self.every:
                return
            step = jnp.asarray(step)
            gated = False
        else:
            gated = self.every > 1
        arrays = lax.stop_gradient([jnp.asarray(a) for a in arrays])  # never differentiated
        ints = [i for i, a in enumerate(arrays) if _is_int(a)]
        every = self.every

        @custom_vmap
        def record(step: jax.Array, *arrays: jax.Array) -> jax.Array:
            # the element counts are those of the arrays seen here: the whole batch under vmap
            self._send(step, sites, arrays, ints, relative, every if gated else 1)
            return jnp.zeros((), jnp.int32)

        @record.def_vmap
        def whole_batch(axis_size: int, in_batched: list[bool], step: jax.Array, *arrays: jax.Array) -> Any:
            # under vmap the batched arrays are described whole (batch axis included), in one record
            if in_batched[0]:
                raise ValueError("fi.watch: step is batched under jax.vmap; pass one step for the whole batch "
                                 "(an unbatched scalar integer)")
            return record(step, *arrays), False

        record(step, *arrays)

    def _send(self, step: jax.Array, sites: list[Site], arrays: Sequence[jax.Array], ints: list[int],
              relative: bool, every: int) -> None:
        """Describe ``arrays`` and hand their rows (and integer arrays' exact abs-max) to the host."""
        counts = [int(np.prod(np.shape(a))) for a in arrays]
        # gradients' and updates' norms relative to their parameter's (same name)
        param_at = {s.name: i for i, s in enumerate(sites) if s.kind == "param"} if relative else {}
        ratio_of = [param_at.get(s.name, -1) if s.kind in ("grad", "update") else -1 for s in sites]
        keep = _device_keep(arrays)
        # Across processes (jax.distributed, outside shard_map) a callback of the whole rows runs on one
        # device, so one process would record: each device's copy of the (replicated) rows is sent,
        # and each process records one of its local devices' identical copies.
        partitioned = jax.process_count() > 1
        copies = jax.local_device_count() if partitioned and keep is None else 1

        def receive(step_value: Any, rows: Any, *extra: Any) -> None:
            rows = np.asarray(rows, np.float64)
            if rows.shape[0] != len(sites):  # a part of the rows: never record it as the whole
                raise ValueError(f"fi.watch received statistics of {rows.shape[0]} of {len(sites)} sites")
            imax = dict(zip(ints, (int(v) for v in np.asarray(extra[0])))) if ints else {}
            kept = np.asarray(extra[-1]) if keep is not None else None
            if copies > 1 and not self._first_copy(id(receive), step_value, rows, extra, copies):
                return
            for i, (site, count) in enumerate(zip(sites, counts)):
                if kept is not None and not kept[i]:
                    continue
                j = ratio_of[i]
                ratio = None
                if j >= 0 and rows[j, 6] != 0:  # undefined where the parameter's norm is 0
                    ratio = float(rows[i, 6] / rows[j, 6])
                self._history.add(int(step_value), site, _scalars(rows[i], count, ratio, imax.get(i)))

        def emit(step_value: Any, rows: jax.Array, *extra: jax.Array) -> None:
            jax.debug.callback(receive, step_value, rows, *extra, ordered=False, partitioned=partitioned)

        int_max = [_int_abs_max(arrays[i]) for i in ints]
        if every == 1:
            extra = ([jnp.stack([m.astype(jnp.result_type(*int_max)) for m in int_max])] if ints else [])
            emit(step, _stack(arrays), *extra, *([keep] if keep is not None else []))
            return
        # One small cond per array, then one for the callback: a single cond over every array
        # measured slower than describing them all at every step (XLA:CPU).
        now = step % every == 0
        rows = [lax.cond(now, array_stats, _no_stats, a) for a in arrays]
        dtype = jnp.result_type(*[r.dtype for r in rows])
        extra = []
        if ints:
            idtype = jnp.result_type(*[m.dtype for m in int_max])
            extra.append(jnp.stack([lax.cond(now, lambda a: _int_abs_max(a).astype(idtype),
                                             lambda a: jnp.zeros((), idtype), arrays[i]) for i in ints]))
        if keep is not None:
            extra.append(keep)
        lax.cond(now, emit, lambda *_: None, step, jnp.stack([r.astype(dtype) for r in rows]), *extra)

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


def watch(module: nn.Module, capture_intermediates: CaptureFilter = True, every: int = 1) -> Watch:
    """A :class:`Watch` of ``module``: call ``watch.at(step).apply(...)`` in place of ``module.apply``
    and ``watch.step(step, params=..., grads=..., updates=...)`` inside the (jitted) train step;
    read ``watch.history``. ``capture_intermediates`` takes the same filters as ``fi.apply``
    (``True``: every ``__call__``; ``False``: no activations; a filter or a callable
    ``(module, method_name) -> bool``); ``every`` is a positive int. Anything else raises."""
    return Watch(module, capture_intermediates, every)
