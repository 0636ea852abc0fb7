"""Where an inspection's work happens, by backend: the one place that decides CPU vs accelerator.

On the CPU backend numpy reads an array on one device in place (nothing to compile or transfer),
XLA:CPU compiles each reduction of a small array as a kernel of its own, and numpy running beside
XLA's own threads slows a running program by far more than the describing takes. On an accelerator,
XLA fuses a reduction into the kernel that produced its array, and describing on the host would
mean a transfer. Every choice below follows from these facts; the statistics engine's own rule for
one list of arrays is :func:`inspector.stats.on_host`.
"""

from __future__ import annotations

from typing import Any

import jax

from inspector import stats
from inspector.engine.signature import is_array


def on_cpu() -> bool:
    """True where the default backend is the CPU."""
    return jax.default_backend() == "cpu"


def tie_summaries_where_produced() -> bool:
    """Whether a captured value's summaries are traced where it is produced, tied to it by an
    optimization barrier (:func:`~inspector.inspection.plan.tie_summaries`): on the CPU, where XLA
    then reduces each array while it is still in cache. Not on an accelerator, where XLA fuses the
    reductions into the producer's own kernel, which the barrier would prevent."""
    return on_cpu()


def describe_variables_while_compiling() -> bool:
    """Whether the caller's variables are described on a worker from the start of a call (an
    accelerator), rather than once tracing starts, or after a cached call has run (the CPU, where
    numpy beside the running program slows it)."""
    return not on_cpu()


def host_describes_after_the_call(multi_device: bool) -> bool:
    """Whether a first call's program may leave every description to numpy after the call (the CPU
    backend, no array over several devices), so that it compiles no statistics at all."""
    return on_cpu() and not multi_device


def described_after_the_call(inputs: Any) -> bool:
    """True if a call on ``inputs`` can leave every description to numpy after the call (the CPU
    backend, no input spread over devices): see ``plan_inspection(in_call=False)``."""
    if not on_cpu():
        return False
    leaves = jax.tree_util.tree_leaves(inputs)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return False
    return stats.on_host([x for x in leaves if is_array(x)])
