"""inspector: see what a Flax (linen) model does.

Drop-in, jitted forms of ``flax.linen.apply``/``init``/``init_with_output`` that
return exactly what flax returns, and ``inspect_*`` forms that return an
:class:`Inspection` (variables, mutations, intermediates, device statistics)::

    import inspector as fi
    from inspector import capture as C
    run = fi.apply(fn, model, mutable=["batch_stats"], capture_intermediates=C.types(nn.Dense))
    y, state = run(variables, x)
    insp = fi.inspect_apply(fn, model, mutable=["batch_stats"])(variables, x)
    grads = fi.inspect_grad(loss_fn, model)(variables, x)  # d loss / d params and every captured output
    watch = fi.watch(model, every=10)  # in a jitted train step: watch.at(step).apply(...), watch.step(...)

NNX (``fi.inspect_nnx``, ``fi.NnxInspectRun``) loads on first use.
"""

from typing import Any

from inspector import capture, patches
from inspector.attention import (
    AttentionLayer, AttentionMaps, AttentionNotFoundError, AttentionNotKeptError, HeadSummary,
)
from inspector.api import (
    InspectRun, InspectUnderTransformError, Inspector, apply, init, init_with_output, inspect, inspect_apply,
    inspect_init, inspect_init_with_output, intervene,
)
from inspector.capture import CaptureFilter, CaptureFilterError, CaptureFilterWarning, Filter
from inspector.compare import compare
from inspector.failure import Failure, last_failure
from inspector.inspection.grad import GradRun, inspect_grad
from inspector.inspection.plan import Keep
from inspector.history import History
from inspector.model import (
    BindingCall, CollectionDiff, Comparison, GradNorm, Inspection, Leaf, LeafDelta, LeafDiff, MethodCall, Node,
    SpansProcessesError, Stats, Timings, UpdateScale, VariableTree,
)
from inspector.names import format_key, parse_key
from inspector.origin import Origin
from inspector.patches import scale, zero  # also as fi.patches.zero / fi.patches.scale
from inspector.engine.results import RunResult
from inspector.engine.runner import Runner
from inspector.watch import Watch, watch
from flax.core.scope import CollectionFilter  # what ``mutable`` takes, as in flax

_NNX = {"inspect_nnx", "NnxInspectRun"}


def __getattr__(name: str) -> Any:
    """NNX support loads when first used, so ``import inspector`` does not import ``flax.nnx``."""
    if name in _NNX:
        from inspector.inspection import nnx

        return getattr(nnx, name)
    raise AttributeError(f"module 'inspector' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _NNX)


__all__ = [
    "apply", "init", "init_with_output", "Runner", "RunResult", "inspect_apply", "inspect_init",
    "inspect_init_with_output", "inspect", "InspectRun", "Inspector", "capture", "Filter", "CaptureFilter",
    "CollectionFilter", "Keep", "CaptureFilterError", "CaptureFilterWarning", "InspectUnderTransformError",
    "Inspection", "VariableTree", "Node", "Leaf", "Stats", "LeafDiff", "CollectionDiff",
    "MethodCall", "Timings", "BindingCall", "Comparison", "LeafDelta", "compare", "intervene", "patches",
    "zero", "scale", "inspect_nnx", "NnxInspectRun", "format_key", "parse_key",
    "inspect_grad", "GradRun", "UpdateScale", "GradNorm", "watch", "Watch", "History", "last_failure", "Failure",
    "Origin", "AttentionMaps", "AttentionLayer", "HeadSummary", "AttentionNotFoundError", "AttentionNotKeptError",
    "SpansProcessesError",
]
__version__ = "0.1.0"
