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
(gated in Python).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core.scope import in_filter, union_filters
from jax import lax

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


def _scalars(row: np.ndarray, count: int, ratio: float | None) -> Scalars:
    mean, std, amax, zeros, nan, inf, norm = (float(v) for v in row)
    return Scalars(mean=mean, std=std, abs_max=amax, zero_frac=zeros / count if count else 0.0,
                   nan=int(nan), inf=int(inf), norm=norm, ratio=ratio, count=count)


def _numeric(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray)) and (jnp.issubdtype(x.dtype, jnp.number)
                                                        and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key))


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(variable path, array)`` of a tree's numeric leaves, in flattening order."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _numeric(leaf):
            names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
            out.append((format_path(names), leaf))
    return out


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
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of steps, not {every!r}")
        self.module = module
        self.every = int(every)
        capture = capture_intermediates
        self.capture: Callable[[Any, str], bool] | None = (
            None if capture is False else lift(capture_calls if capture is True else capture))
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
        """This watch at ``step`` (an int, or an integer array traced in the step)."""
        return WatchStep(self, step)

    def step(self, step: Any, params: Any = None, grads: Any = None, updates: Any = None) -> None:
        """Record the statistics of every numeric leaf of ``params``, ``grads`` and ``updates`` at
        ``step``; gradients and updates also get their norm relative to their parameter's."""
        sites: list[Site] = []
        arrays: list[jax.Array] = []
        for kind, tree in (("param", params), ("grad", grads), ("update", updates)):
            for name, a in _leaves(tree) if tree is not None else ():
                sites.append(Site(kind, name))
                arrays.append(a)
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
        counts = [int(np.prod(np.shape(a))) for a in arrays]
        # gradients' and updates' norms relative to their parameter's (same name)
        param_at = {s.name: i for i, s in enumerate(sites) if s.kind == "param"} if relative else {}
        ratio_of = [param_at.get(s.name, -1) if s.kind in ("grad", "update") else -1 for s in sites]

        def receive(step_value: Any, rows: Any) -> None:
            rows = np.asarray(rows, np.float64)
            if rows.shape[0] != len(sites):  # a part of the rows: never record it as the whole
                raise ValueError(f"fi.watch received statistics of {rows.shape[0]} of {len(sites)} sites")
            for i, (site, count) in enumerate(zip(sites, counts)):
                j = ratio_of[i]
                ratio = None
                if j >= 0 and rows[j, 6] != 0:  # undefined where the parameter's norm is 0
                    ratio = float(rows[i, 6] / rows[j, 6])
                self._history.add(int(step_value), site, _scalars(rows[i], count, ratio))

        # Across processes (jax.distributed) a callback of the whole rows runs on one device, so
        # one process would record: each device's copy of the (replicated) rows is sent instead,
        # recorded by every process (once per local device; a record of a step replaces it).
        partitioned = jax.process_count() > 1

        def emit(step_value: Any, rows: jax.Array) -> None:
            jax.debug.callback(receive, step_value, rows, ordered=False, partitioned=partitioned)

        if isinstance(step, (int, np.integer)):
            if int(step) % self.every == 0:
                emit(jnp.asarray(int(step)), _stack(arrays))
            return
        step = jnp.asarray(step)
        arrays = lax.stop_gradient(arrays)  # statistics are never differentiated: no cond in the backward pass
        if self.every == 1:
            emit(step, _stack(arrays))
            return
        # One small cond per array, then one for the callback: a single cond over every array
        # measured slower than describing them all at every step (XLA:CPU).
        now = step % self.every == 0
        rows = [lax.cond(now, array_stats, _no_stats, a) for a in arrays]
        dtype = jnp.result_type(*[r.dtype for r in rows])
        lax.cond(now, emit, lambda *_: None, step, jnp.stack([r.astype(dtype) for r in rows]))


def watch(module: nn.Module, capture_intermediates: CaptureFilter = True, every: int = 1) -> Watch:
    """A :class:`Watch` of ``module``: call ``watch.at(step).apply(...)`` in place of ``module.apply``
    and ``watch.step(step, params=..., grads=..., updates=...)`` inside the (jitted) train step;
    read ``watch.history``. ``capture_intermediates`` takes the same filters as ``fi.apply``
    (``True``: every ``__call__``; ``False``: no activations)."""
    return Watch(module, capture_intermediates, every)
