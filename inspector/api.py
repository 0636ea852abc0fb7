"""The public entry points: drop-in flax wrappers and their ``inspect_*`` forms."""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax
from flax.core.scope import CollectionFilter

from inspector import capture as C
from inspector import collect, costs, failure, origin, progress
from inspector._compat import flax_flags, unbound_method
from inspector._tracebacks import entry_point
from inspector.background import BackgroundWorker, CallerContext
from inspector.capture import CaptureFilter
from inspector.collect import Keep, assemble, input_arrays, plan_inspection
from inspector.compare import compare
from inspector.model import Comparison, Inspection, Kind, Timings
from inspector.run import (
    DEFAULT_CACHE_SIZE, Runner, Unkeyable, UnsortableKeys, _InsideTransform, static_key, unsortable_keys,
)

_INIT_MUTABLE = nn.DenyList("intermediates")
Phase = Callable[[str], None]
"""Told ``'tracing'``, ``'compiling'``, ``'running'`` and ``'done'`` as an inspected call reaches them."""


_RECENT_RUNS = 16
_runs: weakref.WeakValueDictionary[Any, Any] = weakref.WeakValueDictionary()
_recent_runs: OrderedDict[Any, Any] = OrderedDict()  # also kept for a run nobody holds: ``fi.inspect_apply(...)(v, x)``


def config_key(*config: Any) -> Any:
    """A key equal for equal configurations of a run: modules by class and value (flax modules are
    frozen dataclasses), functions and classes by identity, containers by value. None if some part
    cannot be keyed by value (a module holding a list or an array)."""
    try:
        return static_key(config)
    except Unkeyable:
        return None


def shared_run(make: Callable[[], Any], *config: Any) -> Any:
    """The run ``make()`` builds, or the live one an equal configuration built earlier, with its
    compiled programs: re-running a notebook cell that builds ``Net()`` anew compiles nothing."""
    key = config_key(*config, tuple(flax_flags().items()))  # a flag read while tracing (adopted names)
    if key is None:
        return make()
    try:
        run = _runs.get(key)
    except Exception:  # noqa: BLE001 - a user's __eq__ that refuses: nothing is shared
        return make()
    if run is None:
        run = _runs[key] = make()
    _recent_runs[key] = run
    _recent_runs.move_to_end(key)
    if len(_recent_runs) > _RECENT_RUNS:
        _recent_runs.popitem(last=False)
    return run


def forget_shared_runs() -> None:
    """Forgets every run :func:`shared_run` and :func:`inspect` would reuse: later calls build anew."""
    _runs.clear()
    _recent_runs.clear()
    _inspectors.clear()


def _wrap(kind: Kind, fn: Callable, module: nn.Module, mutable: CollectionFilter, capture: CaptureFilter,
          cache_size: int) -> Runner:
    def make() -> Runner:
        runner = Runner(kind, fn, module, mutable, capture, cache_size=cache_size)
        functools.update_wrapper(runner, fn, updated=())
        return runner

    return shared_run(make, Runner, kind, fn, module, mutable, capture, cache_size)


def apply(fn: Callable, module: nn.Module, mutable: CollectionFilter = False,
          capture_intermediates: CaptureFilter = False, *,
          cache_size: int = DEFAULT_CACHE_SIZE) -> Runner:
    """``flax.linen.apply``, jitted: ``apply(fn, module, ...)(variables, *args, rngs=None, **kw)``
    returns exactly what flax returns. The returned runner counts ``traces`` and keeps at most
    ``cache_size`` compiled signatures (least recently used dropped first)."""
    return _wrap("apply", fn, module, mutable, capture_intermediates, cache_size)


def init(fn: Callable, module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
         capture_intermediates: CaptureFilter = False, *,
         cache_size: int = DEFAULT_CACHE_SIZE) -> Runner:
    """``flax.linen.init``, jitted: ``init(fn, module)(rngs, *args, **kw)`` returns the variables."""
    return _wrap("init", fn, module, mutable, capture_intermediates, cache_size)


def init_with_output(fn: Callable, module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
                     capture_intermediates: CaptureFilter = False, *,
                     cache_size: int = DEFAULT_CACHE_SIZE) -> Runner:
    """``flax.linen.init_with_output``, jitted: returns ``(y, variables)``."""
    return _wrap("init_with_output", fn, module, mutable, capture_intermediates, cache_size)


class InspectUnderTransformError(RuntimeError):
    """An ``inspect_*`` call received tracers: it ran inside ``jax.jit``, ``grad``, ``vmap`` or
    ``eval_shape``, where no concrete :class:`Inspection` can exist."""


_UNDER_TRANSFORM = (
    "inspect_* was called inside a JAX transform (jax.jit, grad, vmap, eval_shape...), where its inputs are "
    "tracers and no Inspection can be built. Call it outside the transform, on concrete arrays; inside a "
    "transform use the drop-in fi.apply/init/init_with_output, which return exactly what flax returns there.")


QUICK_FIRST_CALL = True
"""Where numpy reads arrays in place (the CPU backend, one device), a run's first call compiles
no statistics: it captures, and numpy describes every array after the call. The program that
summarizes inside the call compiles meanwhile, in the background, for the calls after it (which
are faster warm). False: every call runs the summarizing program."""

_compiler = BackgroundWorker("inspector-compile")
PREPARE_DELAY_S = 0.25
"""How long the background compile waits after a first call returns, so that showing its result
(Python, as tracing is) goes first."""


def _prepare_soon(runner: Runner, args: tuple, kwargs: dict, context: CallerContext | None = None) -> None:
    """Compiles the summarizing program in the background, under the jax options of the caller's
    thread (``context``); nothing new starts once the interpreter exits, so a script that ends after
    a first call exits as promptly as a plain one."""
    if _compiler.wait_while_running(PREPARE_DELAY_S):
        with context.entered() if context is not None else contextlib.nullcontext():
            runner.prepare_unless(lambda: _compiler.exiting, args, kwargs)


def _quiet_background() -> bool:
    """True if this call must run with no inspector work on other threads
    (:func:`~inspector.collect.background_work_allowed`); then waits for that work to finish."""
    if collect.background_work_allowed():
        return False
    _compiler.submit(int).result()
    collect.wait_for_worker()
    return True


class InspectRun:
    """A jitted flax call that returns an :class:`Inspection` instead of flax's result.

    ``keep='stats'`` returns no intermediate arrays from the device (only their
    statistics), so activations are never transferred or kept alive. Its programs after the
    first call do not even return them on the device (see ``plan_inspection(lean=True)``); the
    first call whose summaries can't all be trusted (a NaN, an overflow) is run again with a
    program that does, and the run keeps that program from then on.
    """

    compiles_ahead = True
    """Whether the first call may leave the summarizing program to compile in the background
    (:data:`QUICK_FIRST_CALL`): tracing it there must not touch what the caller's thread uses."""

    def __init__(self, kind: Kind, fn: Callable, module: nn.Module, mutable: CollectionFilter,
                 capture: CaptureFilter, keep: Keep = "arrays", patches: dict[str, Any] | None = None):
        self._bind(kind, module, keep, lambda in_call, lean: Runner(
            kind, fn, module, mutable, capture, patches=patches,
            post=plan_inspection(kind, mutable, capture, keep, in_call, lean)))
        functools.update_wrapper(self, fn, updated=())

    def _bind(self, kind: Kind, module: Any, keep: Keep, make_runner: Callable[[bool, bool], Runner]) -> None:
        """What every run holds: the kind of flax call, the module, ``keep`` and the runner (made
        once ``keep`` is known to be valid); ``make_runner(in_call, lean)`` as :func:`plan_inspection`."""
        if keep not in ("arrays", "stats"):
            raise ValueError(f"keep must be 'arrays' or 'stats', not {keep!r}")
        self.kind, self.module, self.keep = kind, module, keep
        self.runner = make_runner(True, keep == "stats")
        self._make_runner = make_runner
        self._retired_traces = 0  # of a lean runner given up for one that returns the arrays
        self._first: Runner | None = None  # describes after the call, until ``runner`` is compiled
        self._compiling: Future | None = None
        self._settled = not (QUICK_FIRST_CALL and self.compiles_ahead)

    @property
    def traces(self) -> int:
        """How many times flax was traced for calls of this run (compiling ahead, in the
        background, is not counted)."""
        return self.runner.traces + self._retired_traces + (self._first.traces if self._first is not None else 0)

    def settle(self) -> None:
        """Waits until the program that summarizes inside the call is compiled, if it is being
        compiled (see :data:`QUICK_FIRST_CALL`)."""
        if self._compiling is not None and not self._compiling.cancelled():
            self._compiling.exception()  # a failure is not raised here: the next call compiles and raises it

    def _runner_for(self, args: tuple, kwargs: dict, quiet: bool) -> tuple[Runner, bool]:
        """``(runner for this call, whether to compile the summarizing program after it)``;
        ``quiet``: nothing may compile in the background, so the summarizing program runs now."""
        if self._settled or quiet:
            self._settled = True
            return self.runner, False
        if self._compiling is None:
            if not collect.described_after_the_call((args, kwargs)):
                self._settled = True
                return self.runner, False
            self._first = self._make_runner(False, False)
            return self._first, True
        if self._compiling.done():
            self._settled = True
            return self.runner, False
        return self._first, False  # type: ignore[return-value]

    @entry_point
    def __call__(self, *args: Any, on_phase: Phase | None = None, **kwargs: Any) -> Inspection:
        """Runs the call (arguments as flax's function takes them) and returns its :class:`Inspection`.

        ``timings.run_ms`` is measured from the ``'running'`` phase, so trace and compile time (a
        call with a new signature) are counted once, in ``trace_ms`` and ``compile_ms``. ``on_phase``
        is told each phase; without it, a first call still running after
        :data:`~inspector.progress.SHOW_AFTER_S` shows a transient status line (:mod:`inspector.progress`)."""
        status = progress.start(type(self.module).__name__) if on_phase is None else None
        try:
            return self._inspect(args, kwargs, on_phase or status.phase)  # type: ignore[union-attr]
        except Exception as e:
            failure.capture(self.runner, *self._flax_arguments(args, kwargs), e)  # for fi.last_failure()
            raise
        finally:
            if status is not None:
                status.close()

    def _inspect(self, args: tuple, kwargs: dict, on_phase: Phase) -> Inspection:
        """:meth:`__call__`, telling ``on_phase`` each phase."""
        marks: dict[str, float] = {}
        given = args, kwargs
        args, kwargs = self._flax_arguments(args, kwargs)
        try:  # a dict whose keys cannot be sorted fails the first flatten: flax's error, or one naming it
            variables = input_arrays(self.kind, args)
            # The caller's variables are described on a worker while the call is traced and compiled.
            # A cached call on the CPU backend describes them after its program has run: numpy beside
            # XLA's own threads slows the program by far more than the describing takes.
            described = None
            if variables and jax.default_backend() != "cpu":
                described = collect.input_stats.soon(variables)

            def phase(name: str) -> None:
                nonlocal described
                marks[name] = time.perf_counter()
                if name == "tracing" and described is None and variables:
                    described = collect.input_stats.soon(variables)
                if on_phase is not None:
                    on_phase(name)

            runner, compile_after = self._runner_for(args, kwargs, _quiet_background())
            result, stats_arrays, record, cached = runner.run(args, kwargs, phase)
        except _InsideTransform:
            raise InspectUnderTransformError(_UNDER_TRANSFORM) from None
        except (ValueError, UnsortableKeys):
            self._unsortable(args, kwargs)
            raise
        jax.block_until_ready((result, stats_arrays))
        run_ms = (time.perf_counter() - marks["running"]) * 1000
        if described is None and variables:
            described = collect.input_stats.soon(variables)
        timings = Timings(0.0 if cached else record.trace_ms, 0.0 if cached else record.compile_ms,
                          run_ms, cached)
        try:
            insp = self._assemble(args, result, stats_arrays, record.recorded, timings, described)
        except collect.NeedsArrays:  # from a lean runner only: its successor returns the arrays
            self._retired_traces += self.runner.traces
            self.runner = self._make_runner(True, False)
            return self._inspect(given[0], given[1], on_phase)
        self._finish(insp)
        origin.remember(self, insp, args, kwargs)  # only where a NaN/Inf was found: what re-running needs
        costs.remember(self, insp, args, kwargs)  # the inputs' shapes: insp.costs() re-traces
        if compile_after:  # after this result is ready: tracing holds the GIL the assembly needs
            self._compiling = _compiler.submit(_prepare_soon, self.runner, args, kwargs, CallerContext())
        if on_phase is not None:
            on_phase("done")
        return insp

    def _unsortable(self, args: tuple, kwargs: dict) -> None:
        """For inputs with a dict whose keys cannot be sorted (which jax cannot flatten): raises flax's
        own error where flax has one for them, else :class:`~inspector.run.UnsortableKeys`."""
        where = unsortable_keys((args, kwargs))
        if where is not None:
            self.runner.call_unjitted(args, kwargs)
            raise UnsortableKeys(where)

    def _assemble(self, args: tuple, result: Any, stats_arrays: Any, plan: Any, timings: Timings,
                  described: Any) -> Inspection:
        """The inspection of one run from what the runner returned and what its trace recorded
        (``plan``, a :class:`~inspector.collect.Plan`)."""
        return assemble(self.kind, self.module, args[0] if args else None, result, stats_arrays,
                        plan, timings, self.keep, described)

    def _flax_arguments(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The call's arguments as the runner takes them."""
        if self.kind == "apply" and not args and "variables" in kwargs:  # flax accepts it by keyword
            kwargs = dict(kwargs)
            args = (kwargs.pop("variables"),)
        return args, kwargs

    def _finish(self, insp: Inspection) -> None:
        """What a kind of run adds to its inspection before it is returned."""

    @entry_point
    def show(self, *args: Any, **kwargs: Any) -> Any:
        """In a notebook: display a widget now, run with live status, fill it in; returns the widget."""
        from inspector.views.widgets import show

        return show(self, *args, **kwargs)


def _default_capture(capture: CaptureFilter | None) -> CaptureFilter:
    return C.calls if capture is None else capture


def inspect_apply(fn: Callable, module: nn.Module, mutable: CollectionFilter = False,
                  capture_intermediates: CaptureFilter | None = None, keep: Keep = "arrays",
                  patches: dict[str, Any] | None = None) -> InspectRun:
    """Like :func:`apply`, but calls return an :class:`Inspection`.
    ``capture_intermediates`` defaults to :data:`capture.calls` (every ``__call__``).
    ``patches`` maps ``'path:method'`` (or ``'path:method[i]'``, the i-th call) to a
    function of the method's output, or a value to put in its place (see :func:`intervene`)."""
    capture = _default_capture(capture_intermediates)
    return shared_run(lambda: InspectRun("apply", fn, module, mutable, capture, keep, patches),
                      InspectRun, "apply", fn, module, mutable, capture, keep, patches)


def intervene(fn: Callable, module: nn.Module, patches: dict[str, Any], mutable: CollectionFilter = False,
              capture_intermediates: CaptureFilter | None = None, keep: Keep = "arrays") -> Callable[..., Comparison]:
    """Activation patching: ``intervene(fn, module, {'blocks_3/mlp:__call__': fi.patches.zero})(variables, x)``
    runs clean and patched and returns their :class:`Comparison` (output first)."""
    clean = inspect_apply(fn, module, mutable, capture_intermediates, keep)
    patched = inspect_apply(fn, module, mutable, capture_intermediates, keep, patches)

    @entry_point
    def run(*args: Any, **kwargs: Any) -> Comparison:
        return compare(clean(*args, **kwargs), patched(*args, **kwargs), labels=("clean", "patched"))

    run.clean, run.patched = clean, patched  # type: ignore[attr-defined]
    return run


def inspect_init(fn: Callable, module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
                 capture_intermediates: CaptureFilter = False, keep: Keep = "arrays") -> InspectRun:
    """Like :func:`init`, but calls return an :class:`Inspection` of the created variables."""
    return shared_run(lambda: InspectRun("init", fn, module, mutable, capture_intermediates, keep),
                      InspectRun, "init", fn, module, mutable, capture_intermediates, keep)


def inspect_init_with_output(fn: Callable, module: nn.Module, mutable: CollectionFilter = _INIT_MUTABLE,
                             capture_intermediates: CaptureFilter | None = None,
                             keep: Keep = "arrays") -> InspectRun:
    """Like :func:`init_with_output`, but calls return an :class:`Inspection`."""
    capture = _default_capture(capture_intermediates)
    return shared_run(lambda: InspectRun("init_with_output", fn, module, mutable, capture, keep),
                      InspectRun, "init_with_output", fn, module, mutable, capture, keep)


def _method_fn(module: nn.Module, method: str | Callable | None) -> Callable:
    if method is None:
        method = module.__call__
    if isinstance(method, str):
        name = method
        return getattr(type(module), name) if hasattr(type(module), name) else (
            lambda m, *a, **k: getattr(m, name)(*a, **k))
    return unbound_method(method)


def _key(x: Any) -> Any:
    if isinstance(x, list):
        return ("list", tuple(x))
    try:
        hash(x)
        return x
    except TypeError:
        return ("id", id(x))


class Inspector:
    """``Module.apply``/``init``/``init_with_output`` for one module, jitted and cached
    per ``(method, mutable, capture)``; ``inspect`` returns an :class:`Inspection`."""

    def __init__(self, module: nn.Module, max_cached: int = 32):
        self.module = module
        self._runs: OrderedDict[Any, Any] = OrderedDict()
        self._max = max_cached

    def _get(self, factory, kind, method, mutable, capture, keep=None):
        key = (kind, _key(method), _key(mutable), _key(capture), keep)
        run = self._runs.get(key)
        if run is None:
            fn = _method_fn(self.module, method)
            args = (fn, self.module, mutable, capture) + ((keep,) if keep else ())
            run = self._runs[key] = factory(*args)
            if len(self._runs) > self._max:
                self._runs.popitem(last=False)
        self._runs.move_to_end(key)
        return run

    @entry_point
    def apply(self, variables: Any, *args: Any, rngs: Any = None, method: str | Callable | None = None,
              mutable: CollectionFilter = False, capture_intermediates: CaptureFilter = False,
              **kwargs: Any) -> Any:
        run = self._get(apply, "apply", method, mutable, capture_intermediates)
        return run(variables, *args, rngs=rngs, **kwargs)

    @entry_point
    def init(self, rngs: Any, *args: Any, method: str | Callable | None = None,
             mutable: CollectionFilter = _INIT_MUTABLE, capture_intermediates: CaptureFilter = False,
             **kwargs: Any) -> Any:
        return self._get(init, "init", method, mutable, capture_intermediates)(rngs, *args, **kwargs)

    @entry_point
    def init_with_output(self, rngs: Any, *args: Any, method: str | Callable | None = None,
                         mutable: CollectionFilter = _INIT_MUTABLE, capture_intermediates: CaptureFilter = False,
                         **kwargs: Any) -> Any:
        run = self._get(init_with_output, "init_with_output", method, mutable, capture_intermediates)
        return run(rngs, *args, **kwargs)

    @entry_point
    def inspect(self, variables: Any, *args: Any, rngs: Any = None, method: str | Callable | None = None,
                mutable: CollectionFilter = False, capture_intermediates: CaptureFilter | None = None,
                keep: Keep = "arrays", **kwargs: Any) -> Inspection:
        run = self._get(inspect_apply, "inspect", method, mutable,
                        _default_capture(capture_intermediates), keep)
        return run(variables, *args, rngs=rngs, **kwargs)


_inspectors: OrderedDict[Any, Inspector] = OrderedDict()


@entry_point
def inspect(module: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> Inspection:
    """One-shot ``module.apply(variables, *args, **kwargs)`` as an :class:`Inspection`
    (accepts ``rngs``, ``method``, ``mutable``, ``capture_intermediates``, ``keep``).
    Repeated calls on the same module, or on an equal one (same class and fields), reuse its
    compiled runs."""
    key = config_key(module)
    if key is None:
        key = ("id", id(module))
    ins = _inspectors.get(key)
    if ins is None or (key[0] == "id" and ins.module is not module):
        ins = _inspectors[key] = Inspector(module)
        if len(_inspectors) > 16:
            _inspectors.popitem(last=False)
    _inspectors.move_to_end(key)
    return ins.inspect(variables, *args, **kwargs)
