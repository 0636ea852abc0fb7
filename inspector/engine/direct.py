"""The direct path of a cached plain call: once a plain signature has run twice, a runner calls its
executable straight from the caller's arguments through jax's C++ dispatch
(:func:`~inspector._compat.direct_call`), with no Python of inspector in front but a read of flax's
``return_frozendict`` flag and a check of the key order jax does not see. jax refuses every other
signature; the runner's general path (:meth:`~inspector.engine.runner.Runner.run`) takes those calls.
What it buys is measured by ``bench/bench_touchpoints.py`` (bench/README.md, "Private jax/flax
touchpoints")."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax

from inspector._compat import direct_call
from inspector.engine.call_state import call_program
from inspector.engine.results import SignatureRecord
from inspector.engine.signature import order_check


class Direct(NamedTuple):
    """The last signature of a plain call, run by jax's C++ dispatch straight from the caller's
    arguments: jax refuses any other signature, and ``order`` checks the key order jax does not see."""

    call: Callable[..., Any]
    order: Callable[[tuple[Any, ...], dict[str, Any]], bool] | None
    build: Callable[[list[Any]], Any] | None  # None: jax's dispatch builds the result itself
    frozen: bool  # flax's return_frozendict flag it was made under
    program: Any  # the runner's program whose executable it calls (its use counts for the runner's cache)


class DirectPath:
    """One runner's direct path: ``current`` (None while there is none), made by :meth:`make` after a
    cached call and dropped by :meth:`refused` when a call does not fit it. After a refusal the next one
    is made only after twice as many calls as the last wait, so alternating signatures stay on the general
    path; ``backoff < 0``: never again for this runner."""

    def __init__(self) -> None:
        self.current: Direct | None = None
        self.wait = 0  # calls to let go by before the next is made
        self.backoff = 0

    def refused(self, direct: Direct) -> None:
        """``direct`` did not fit a call: drop it, and wait twice as long as last time before making another."""
        if self.current is direct:
            self.current = None
            self.backoff = min(2 * self.backoff, 1024) or 1
            self.wait = self.backoff

    def make(self, program: Any, eligible: bool, inputs: tuple[tuple[Any, ...], dict[str, Any]],
             record: SignatureRecord) -> None:
        """After a cached call of ``program`` (``program.jitted``, a ``jax.jit`` function of ``inputs``):
        where the call is ``eligible`` (a plain program, no trace hooks) and its result has nothing to put
        back but flax's key order, calls with this signature go straight to its executable. Where every dict
        of the result is in sorted key order, jax's dispatch builds the result."""
        if self.wait > 0:
            self.wait -= 1
            return
        if not eligible or self.backoff < 0 or record.build is None or record.statics or record.objects:
            return
        fits, order = order_check(inputs)
        if not fits:
            return
        leaves_as = None if record.reorder else record.out_tree
        me, compiled = threading.get_ident(), []

        def on_compile(event: str, duration_secs: float, **_: str | int) -> None:
            # jax's event for each XLA compile (or persistent-cache read): on this thread, ours
            if event == "/jax/core/compile/backend_compile_duration" and threading.get_ident() == me:
                compiled.append(duration_secs)
        jax.monitoring.register_event_duration_secs_listener(on_compile)
        try:
            made, traced = call_program(lambda i: direct_call(program.jitted, i, leaves_as), inputs, None,
                                        counted=False)  # a trace it makes is not the caller's
        finally:
            with contextlib.suppress(AssertionError, ValueError):  # gone if someone cleared jax's listeners
                jax.monitoring.unregister_event_duration_listener(on_compile)
        if made is None or traced is not None or compiled:
            self.backoff = -1  # jax compiled or traced again to get there: never for this runner
            return
        call, out_tree = made
        if out_tree.node_data()[1].out_tree != record.out_tree:  # not the executable that record describes
            return
        build = None if leaves_as is not None else record.build
        self.current = Direct(call, order, build, flax.config.flax_return_frozendict, program)
