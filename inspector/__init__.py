"""inspector: see what a Flax (linen) model does.

Drop-in, jitted forms of ``flax.linen.apply``/``init``/``init_with_output`` that
return exactly what flax returns, and ``inspect_*`` forms that return an
:class:`Inspection` (variables, mutations, intermediates, device statistics)::

    import inspector as fi
    from inspector import capture as C
    run = fi.apply(fn, model, mutable=["batch_stats"], capture_intermediates=C.types(nn.Dense))
    y, state = run(variables, x)
    insp = fi.inspect_apply(fn, model, mutable=["batch_stats"])(variables, x)
"""

from inspector import capture
from inspector.api import (
    InspectUnderTransformError, Inspector, apply, init, init_with_output, inspect, inspect_apply, inspect_init,
    inspect_init_with_output, intervene, scale, zero,
)
from inspector.compare import compare
from inspector.nnx import NnxInspectRun, inspect_nnx
from inspector.capture import CaptureFilterError
from inspector.names import format_key, parse_key
from inspector.model import (
    BindingCall, CollectionDiff, Comparison, Inspection, Leaf, LeafDelta, LeafDiff, MethodCall, Node, Stats,
    Timings, VariableTree,
)

__all__ = [
    "apply", "init", "init_with_output", "inspect_apply", "inspect_init",
    "inspect_init_with_output", "inspect", "Inspector", "capture", "CaptureFilterError",
    "InspectUnderTransformError",
    "Inspection", "VariableTree", "Node", "Leaf", "Stats", "LeafDiff", "CollectionDiff",
    "MethodCall", "Timings", "BindingCall", "Comparison", "LeafDelta", "compare", "intervene", "zero",
    "scale", "inspect_nnx", "NnxInspectRun", "format_key", "parse_key",
]
__version__ = "0.1.0"
