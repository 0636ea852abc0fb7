"""One inspected call, from the caller's arguments to its :class:`~inspector.model.Inspection`.

:class:`InspectRun` is the pipeline of the inspection wing, in the order a call travels:

1. the caller's variables are handed to :mod:`~inspector.inspection.variables` to be described
   (on a worker while the call is traced and compiled, off the CPU backend);
2. the first-call policy picks the runner (:meth:`InspectRun._runner_for`): on the CPU backend a
   first call runs a capture-only program and the summarizing one compiles in the background
   (:data:`QUICK_FIRST_CALL`);
3. the :class:`~inspector.engine.runner.Runner` runs flax under ``jax.jit`` with the hooks of
   :func:`~inspector.inspection.plan.plan_inspection`, which plan the statistics at trace time;
4. :func:`~inspector.inspection.assemble.assemble` builds the inspection on the host.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import flax.linen as nn
import jax
from flax.core.scope import CollectionFilter

from inspector import capture as C
from inspector import costs, failure, origin, progress, replay
from inspector._tracebacks import entry_point
from inspector.background import BackgroundWorker, CallerContext
from inspector.capture import CaptureFilter
from inspector.engine.call_inputs import CallInputs
from inspector.engine.runner import InsideTransform, Runner
from inspector.engine.signature import UnsortableKeys, rebuilt, unsortable_keys, weakly
from inspector.inspection import backend
from inspector.inspection import variables as V
from inspector.inspection.assemble import NeedsArrays, assemble
from inspector.inspection.plan import Keep, plan_inspection
from inspector.inspection.variables import input_arrays
from inspector.model import Inspection, Kind, Timings

Phase = Callable[[str], None]
"""Told ``'tracing'``, ``'compiling'``, ``'running'`` and ``'done'`` as an inspected call reaches them."""


class InspectUnderTransformError(RuntimeError):
    """An ``inspect_*`` call received tracers: it ran inside ``jax.jit``, ``grad``, ``vmap`` or
    ``eval_shape``, where no concrete :class:`Inspection` can exist."""


_UNDER_TRANSFORM = (
    "inspect_* was called inside a JAX transform (jax.jit, grad, vmap, eval_shape...), where its inputs are "
    "tracers and no Inspection can be built. Call it outside the transform, on concrete arrays; inside a "
    "transform use the drop-in fi.apply/init/init_with_output, which return exactly what flax returns there.")


QUICK_FIRST_CALL = True
"""Where numpy reads arrays in place (the CPU backend, one device), a run's first calls compile no
statistics: they capture, and the host summarizes every array after the call (the in-call
summaries' five reductions and trust rule, by numpy: :func:`~inspector.stats.device.summaries_after_the_call`),
or, for arrays the inspection keeps (``keep='arrays'``), the first time their statistics are read.
The program that summarizes inside the call (quicker warm) is compiled in the background only once
it pays: once describing after the calls has taken the run as long as compiling is estimated to take
(:data:`COMPILE_AFTER_MS`). False: every call runs the summarizing program."""

COMPILE_AFTER_MS: float | None = None
"""Milliseconds of describing after its calls (numpy's statistics of their captured arrays, when the
call returns or, for arrays the inspection keeps, when they are first read) after which a run
compiles its summarizing program in the background; None: the estimate of that compile, the first
call's own trace and compile time (:attr:`~inspector.model.Timings.trace_ms` + ``compile_ms``)
times :data:`COMPILE_COST`. Ski rental: the calls spend no more describing on the host than the
compile would have cost before it starts. A compile on a 2-core CPU competes with the caller's own
calls, so it starts only where it pays."""
COMPILE_COST = 1.5
"""The summarizing program's trace and compile time over the capture-only program's (1.3-1.4x on the
bench models: its five reductions per captured array)."""

_compiler = BackgroundWorker("inspector-compile")
PREPARE_DELAY_S = 0.25
"""How long the background compile waits after the call that started it returns, so that showing its
result (Python, as tracing is) goes first."""


def _prepare_soon(runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any], context: CallerContext | None = None,
                  delay_s: float | None = None, low_priority: bool = False) -> None:
    """Compiles the summarizing program in the background, under the jax options of the caller's
    thread (``context``), after ``delay_s`` (default :data:`PREPARE_DELAY_S`); nothing new starts once
    the interpreter exits, so a script that ends after a call exits as promptly as a plain one.
    ``low_priority``: once traced and lowered (Python, which holds the GIL), XLA compiles it at the
    lowest priority (:meth:`~inspector.background.BackgroundWorker.lower_priority`; it holds no GIL),
    on what CPU the caller's calls leave."""
    if not _compiler.wait_while_running(PREPARE_DELAY_S if delay_s is None else delay_s):
        return
    asked = 0

    def stop() -> bool:  # asked before tracing, then before compiling
        nonlocal asked
        asked += 1
        if asked == 2 and low_priority:
            _compiler.lower_priority()
        return _compiler.exiting

    with context.entered() if context is not None else contextlib.nullcontext():
        runner.prepare_unless(stop, args, kwargs)


class _LastCall:
    """A call's inputs, to trace the summarizing program for later, holding the arrays in its plain
    containers (dicts, lists, tuples, in their own key order) by weak reference, so it never keeps the
    caller's arrays alive; and the jax options of the caller's thread."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._refs: list[weakref.ref[Any]] = []
        self.held = rebuilt((args, kwargs), self._weakly)
        self.context = CallerContext()

    def _weakly(self, v: Any) -> Any:
        ref = weakly(v)
        if type(ref) is weakref.ref:
            self._refs.append(ref)
        return ref

    def alive(self) -> bool:
        """Whether every array of the call is still alive."""
        return all(r() is not None for r in self._refs)

    def inputs(self) -> tuple[tuple[Any, ...], dict[str, Any], CallerContext] | None:
        """``(args, kwargs, context)``, or None once an array of them is gone."""
        try:
            args, kwargs = _strongly(self.held)
        except LookupError:
            return None
        return args, kwargs, self.context


def _strongly(x: Any) -> Any:
    def held(v: Any) -> Any:
        if type(v) is not weakref.ref:
            return v
        value = v()
        if value is None:
            raise LookupError("gone")
        return value

    return rebuilt(x, held)


def _quiet_background() -> bool:
    """True if this call must run with no inspector work on other threads
    (:func:`~inspector.V.background_work_allowed`); then waits for that work to finish."""
    if V.background_work_allowed():
        return False
    _compiler.submit(int).result()
    V.wait_for_worker()
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

    def __init__(self, kind: Kind, fn: Callable[..., Any], module: nn.Module, mutable: CollectionFilter,
                 capture: CaptureFilter, keep: Keep = "arrays", patches: dict[str, Any] | None = None):
        self._set_up(kind, module, keep, lambda in_call, lean: Runner(
            kind, fn, module, mutable, capture, patches=patches,
            hooks=plan_inspection(kind, mutable, capture, keep, in_call, lean, packs=True)))
        functools.update_wrapper(self, fn, updated=())

    def _set_up(self, kind: Kind, module: Any, keep: Keep, make_runner: Callable[[bool, bool], Runner]) -> None:
        """What every run holds: the kind of flax call, the module, ``keep`` and the runner (made
        once ``keep`` is known to be valid); ``make_runner(in_call, lean)`` as :func:`plan_inspection`."""
        if keep not in ("arrays", "stats"):
            raise ValueError(f"keep must be 'arrays' or 'stats', not {keep!r}")
        self.kind, self.module, self.keep = kind, module, keep
        self.runner = make_runner(True, keep == "stats")
        self._make_runner = make_runner
        self._retired_traces = 0  # of a lean runner given up for one that returns the arrays
        self._first: Runner | None = None  # captures only (described after the call) until ``runner`` is compiled
        self._compiling: Future[None] | None = None
        self._settled = not (QUICK_FIRST_CALL and self.compiles_ahead)
        self.described_after_ms = 0.0  # describing the ``_first`` runner's calls' captured arrays, so far
        self._compile_after_ms: float | None = None  # :data:`COMPILE_AFTER_MS` for this run, from its first call
        self._last_call: _LastCall | None = None  # what compiling ahead traces
        self._paying = threading.Lock()  # deciding to compile ahead (a view may read on its own thread)

    @property
    def traces(self) -> int:
        """How many times flax was traced for calls of this run (compiling ahead, in the
        background, is not counted)."""
        return self.runner.traces + self._retired_traces + (self._first.traces if self._first is not None else 0)

    def settle(self) -> None:
        """Waits until the program that summarizes inside the call is compiled (see
        :data:`QUICK_FIRST_CALL`), starting its compile now if the run's calls had not yet paid for it."""
        with self._paying:
            if self._compiling is None and self._last_call is not None:
                self._compile_ahead(delay_s=0.0, low_priority=False)
            elif self._compiling is not None and not self._compiling.done():
                _compiler.restore_priority()  # where the system allows it: someone waits for it now
        if self._compiling is not None and not self._compiling.cancelled():
            self._compiling.exception()  # a failure is not raised here: the next call compiles and raises it

    @property
    def first_calls(self) -> bool:
        """True while the run's calls run its capture-only program and are described after the call
        (the summarizing program is not yet compiled)."""
        return not self._settled and self._first is not None

    def _runner_for(self, args: tuple[Any, ...], kwargs: dict[str, Any], quiet: bool) -> Runner:
        """The runner for this call: the capture-only one until the summarizing program is compiled
        (:data:`QUICK_FIRST_CALL`); ``quiet``: nothing may compile in the background, so the
        summarizing program runs now."""
        if self._settled or quiet:
            self._settled, self._last_call = True, None
            return self.runner
        if self._first is None:
            if not backend.described_after_the_call((args, kwargs)):
                self._settled = True
                return self.runner
            self._first = self._make_runner(False, False)
            return self._first
        if self._compiling is not None and self._compiling.done():
            self._settled, self._last_call = True, None
            return self.runner
        return self._first

    def _described_after(self, args: tuple[Any, ...], kwargs: dict[str, Any], timings: Timings) -> None:
        """After a capture-only call: starts compiling the summarizing program in the background once
        describing the run's calls has cost :data:`COMPILE_AFTER_MS` (:attr:`described_after_ms`)."""
        if self._compile_after_ms is None:  # the first call: its trace and compile are the estimate
            self._compile_after_ms = (COMPILE_AFTER_MS if COMPILE_AFTER_MS is not None
                                      else COMPILE_COST * (timings.trace_ms + timings.compile_ms))
        if self._compiling is not None:
            return
        if self._last_call is None or not self._last_call.alive():  # a call's, while its arrays live
            self._last_call = _LastCall(args, kwargs)
        self._compile_if_paid()

    def _compile_if_paid(self) -> None:
        """Starts compiling the summarizing program once describing has cost :data:`COMPILE_AFTER_MS`
        (after a call, or as a view or the user reads a kept inspection's statistics, on any thread)."""
        with self._paying:
            if (self._compiling is None and self._last_call is not None and self._compile_after_ms is not None
                    and self.described_after_ms >= self._compile_after_ms):
                self._compile_ahead()

    def _compile_ahead(self, delay_s: float | None = None, low_priority: bool = True) -> None:
        """Compiles the summarizing program on the compile thread (see :func:`_prepare_soon`), for
        the inputs of the last call."""
        assert self._last_call is not None
        inputs = self._last_call.inputs()
        if inputs is None:  # its arrays are gone: the next call's are traced
            self._last_call = None
            return
        self._last_call = None  # the compile job holds them from now on
        self._compiling = _compiler.submit(_prepare_soon, self.runner, *inputs, delay_s, low_priority)

    @entry_point
    def __call__(self, *args: Any, on_phase: Phase | None = None, **kwargs: Any) -> Inspection:
        """Runs the call (arguments as flax's function takes them) and returns its :class:`Inspection`.

        ``timings.run_ms`` is measured from the ``'running'`` phase, so trace and compile time (a
        call with a new signature) are counted once, in ``trace_ms`` and ``compile_ms``. ``on_phase``
        is told each phase; without it, a first call still running after
        :data:`~inspector.progress.SHOW_AFTER_S` shows a transient status line (:mod:`inspector.progress`).

        Args:
          *args: the call's positional arguments, as flax's returned function takes them
            (``variables, *inputs`` for ``apply``, ``rngs, *inputs`` for the init forms).
          on_phase: told ``'tracing'``, ``'compiling'``, ``'running'`` and ``'done'`` as the call reaches them.
          **kwargs: the call's keyword arguments (``rngs=`` and the method's own).

        Returns:
          The :class:`~inspector.model.Inspection` of the call.

        Raises:
          InspectUnderTransformError: the call was given tracers (inside ``jax.jit``, ``grad``, ...).
        """
        status = progress.start(type(self.module).__name__) if on_phase is None else None
        try:
            phase = on_phase or status.phase  # type: ignore[union-attr]
            # At most twice: a lean runner (``keep='stats'``, arrays not returned) whose summaries can't all
            # be trusted raises NeedsArrays from the assembly; the call then runs again, once, with a runner
            # that returns the arrays, and the run keeps that runner (it never raises NeedsArrays).
            for attempt in range(2):
                try:
                    return self._inspect(args, kwargs, phase)
                except NeedsArrays:
                    if attempt:
                        raise
                    self._retired_traces += self.runner.traces
                    self.runner = self._make_runner(True, False)
            raise AssertionError("unreachable")  # the loop returns or raises
        except Exception as e:
            failure.capture(self.runner, *self._flax_arguments(args, kwargs), e)  # for fi.last_failure()
            raise
        finally:
            if status is not None:
                status.close()

    def _inspect(self, args: tuple[Any, ...], kwargs: dict[str, Any], on_phase: Phase) -> Inspection:
        """:meth:`__call__`, telling ``on_phase`` each phase."""
        marks: dict[str, float] = {}
        args, kwargs = self._flax_arguments(args, kwargs)
        try:  # a dict whose keys cannot be sorted fails the first flatten: flax's error, or one naming it
            variables = input_arrays(self.kind, args)
            # The caller's variables are described on a worker while the call is traced and compiled.
            # A cached call on the CPU backend describes them after its program has run: numpy beside
            # XLA's own threads slows the program by far more than the describing takes.
            described = None
            if variables and backend.describe_variables_while_compiling():
                described = V.input_stats.soon(variables)

            def phase(name: str) -> None:
                nonlocal described
                marks[name] = time.perf_counter()
                if name == "tracing" and described is None and variables:
                    described = V.input_stats.soon(variables)
                if on_phase is not None:
                    on_phase(name)

            runner = self._runner_for(args, kwargs, _quiet_background())
            result, stats_arrays, record, cached = runner.run(args, kwargs, phase)
        except InsideTransform:
            raise InspectUnderTransformError(_UNDER_TRANSFORM) from None
        except (ValueError, UnsortableKeys):
            self._unsortable(args, kwargs)
            raise
        # The outputs of one run of a program are ready together: its statistics and flax's output are
        # waited for, not each captured array (nor their placeholders, which are not arrays).
        jax.block_until_ready((stats_arrays, result[0] if type(result) is tuple else result))
        run_ms = (time.perf_counter() - marks["running"]) * 1000
        if described is None and variables:
            described = V.input_stats.soon(variables)
        timings = Timings(0.0 if cached else record.trace_ms, 0.0 if cached else record.compile_ms,
                          run_ms, cached)
        first_calls = runner is self._first
        # Captured arrays the inspection keeps are described when first read (on the host, that is when
        # a view or the user reads them); those it drops, now. Not across processes: describing a global
        # array is a collective every process must start in the same order.
        when_read = self.keep == "arrays" and jax.process_count() == 1
        insp = self._assemble(args, result, stats_arrays, record.recorded, timings, described,
                              when_read=when_read, after_the_call=first_calls,
                              on_described=self._count_described if first_calls else None)  # may raise NeedsArrays
        self._finish(insp)
        inputs = CallInputs.of(args, kwargs)  # flattened once: the caller may change its dicts afterwards
        origin.remember(self, insp, inputs, when_read)  # where a NaN/Inf is found: what re-running needs
        replay.remember(self, insp, inputs)  # what call.inputs and call.replay() re-run
        costs.remember(self, insp, inputs)  # the inputs' shapes: insp.costs() re-traces
        if first_calls:  # after this result is ready: tracing holds the GIL the assembly needs
            self._described_after(args, kwargs, timings)
        if on_phase is not None:
            on_phase("done")
        return insp

    def _count_described(self, ms: float) -> None:
        """Counts the time a first call's statistics took (now, or when first read) towards compiling
        the summarizing program (:attr:`described_after_ms`)."""
        self.described_after_ms += ms
        self._compile_if_paid()

    def _unsortable(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """For inputs with a dict whose keys cannot be sorted (which jax cannot flatten): raises flax's
        own error where flax has one for them, else :class:`~inspector.engine.signature.UnsortableKeys`."""
        where = unsortable_keys((args, kwargs))
        if where is not None:
            self.runner.call_unjitted(args, kwargs)
            raise UnsortableKeys(where)

    def _assemble(self, args: tuple[Any, ...], result: Any, stats_arrays: Any, plan: Any, timings: Timings,
                  described: Any, **when: Any) -> Inspection:
        """The inspection of one run from what the runner returned and what its trace recorded
        (``plan``, a :class:`~inspector.inspection.plan.Plan`); ``when``: when its statistics are
        computed (:func:`~inspector.inspection.assemble.assemble`'s keywords)."""
        return assemble(self.kind, self.module, args[0] if args else None, result, stats_arrays,
                        plan, timings, self.keep, described, **when)

    def _flax_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
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
        from inspector.views.display import show

        return show(self, *args, **kwargs)


def default_capture(capture: CaptureFilter | None) -> CaptureFilter:
    return C.calls if capture is None else capture
