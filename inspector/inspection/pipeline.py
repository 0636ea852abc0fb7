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
import time
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
from inspector.engine.runner import InsideTransform, Runner
from inspector.engine.signature import UnsortableKeys, unsortable_keys
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

    def __init__(self, kind: Kind, fn: Callable, module: nn.Module, mutable: CollectionFilter,
                 capture: CaptureFilter, keep: Keep = "arrays", patches: dict[str, Any] | None = None):
        self._bind(kind, module, keep, lambda in_call, lean: Runner(
            kind, fn, module, mutable, capture, patches=patches,
            hooks=plan_inspection(kind, mutable, capture, keep, in_call, lean)))
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
            if not backend.described_after_the_call((args, kwargs)):
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

    def _inspect(self, args: tuple, kwargs: dict, on_phase: Phase) -> Inspection:
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

            runner, compile_after = self._runner_for(args, kwargs, _quiet_background())
            result, stats_arrays, record, cached = runner.run(args, kwargs, phase)
        except InsideTransform:
            raise InspectUnderTransformError(_UNDER_TRANSFORM) from None
        except (ValueError, UnsortableKeys):
            self._unsortable(args, kwargs)
            raise
        jax.block_until_ready((result, stats_arrays))
        run_ms = (time.perf_counter() - marks["running"]) * 1000
        if described is None and variables:
            described = V.input_stats.soon(variables)
        timings = Timings(0.0 if cached else record.trace_ms, 0.0 if cached else record.compile_ms,
                          run_ms, cached)
        insp = self._assemble(args, result, stats_arrays, record.recorded, timings, described)  # may raise NeedsArrays
        self._finish(insp)
        origin.remember(self, insp, args, kwargs)  # only where a NaN/Inf was found: what re-running needs
        replay.remember(self, insp, args, kwargs)  # what call.inputs and call.replay() re-run
        costs.remember(self, insp, args, kwargs)  # the inputs' shapes: insp.costs() re-traces
        if compile_after:  # after this result is ready: tracing holds the GIL the assembly needs
            self._compiling = _compiler.submit(_prepare_soon, self.runner, args, kwargs, CallerContext())
        if on_phase is not None:
            on_phase("done")
        return insp

    def _unsortable(self, args: tuple, kwargs: dict) -> None:
        """For inputs with a dict whose keys cannot be sorted (which jax cannot flatten): raises flax's
        own error where flax has one for them, else :class:`~inspector.engine.signature.UnsortableKeys`."""
        where = unsortable_keys((args, kwargs))
        if where is not None:
            self.runner.call_unjitted(args, kwargs)
            raise UnsortableKeys(where)

    def _assemble(self, args: tuple, result: Any, stats_arrays: Any, plan: Any, timings: Timings,
                  described: Any) -> Inspection:
        """The inspection of one run from what the runner returned and what its trace recorded
        (``plan``, a :class:`~inspector.inspection.plan.Plan`)."""
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
        from inspector.views.display import show

        return show(self, *args, **kwargs)


def default_capture(capture: CaptureFilter | None) -> CaptureFilter:
    return C.calls if capture is None else capture
