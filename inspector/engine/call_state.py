"""What a program's trace reads of the call that started it: jax calls the traced function with the
inputs alone (abstract), so the call's concrete inputs, its phase callback and whether its trace is
counted travel in this thread's :class:`CallState`, set by :func:`call_program` around the call and
cleared after it (holding no arrays past the call)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from inspector import progress


class CallState(threading.local):
    """This thread's call into a program, as :meth:`~inspector.engine.runner.Runner._trace` reads it.
    One per thread (:data:`this_call`)."""

    inputs: Any  # the call's concrete inputs (the trace reads whether some is sharded over several devices)
    on_phase: Callable[[str], None] | None  # told 'tracing' and 'compiling' when the trace reaches them
    traced: float | None  # when tracing ended (``time.perf_counter()``); None while nothing was traced
    uncounted: bool  # compiled ahead (``Runner.prepare``): not counted in ``traces``, no status line
    status: progress.Status | None  # the transient status line a slow call without ``on_phase`` started

    def __init__(self) -> None:
        self.inputs, self.on_phase, self.traced, self.uncounted, self.status = None, None, None, False, None


this_call = CallState()


def call_program(target: Callable[[Any], Any], inputs: Any, on_phase: Callable[[str], None] | None,
                 counted: bool = True) -> tuple[Any, float | None]:
    """``(target(inputs), when tracing ended or None if nothing was traced)``; a trace is added to
    the runner's ``traces`` only if ``counted``."""
    cur = this_call
    cur.inputs, cur.on_phase, cur.traced, cur.uncounted = inputs, on_phase, None, not counted
    try:
        return target(inputs), cur.traced
    finally:
        cur.inputs = cur.on_phase = cur.traced = None  # hold no arrays past the call
        cur.uncounted = False
        status = cur.status
        if status is not None:  # started by the trace
            cur.status = None
            status.close()
