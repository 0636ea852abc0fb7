"""Flax NNX through the same :class:`~inspector.model.Inspection` model.

The module is split into one pure-dict state per variable type (named like linen
collections: ``params``, ``batch_stats``, ``cache``; others by type name), merged
back inside the jitted call, and run under ``nnx.capture`` with
``method_outputs=nnx.Intermediate`` so every method's output and every
``sow(nnx.Intermediate, ...)`` is recorded. The caller's module is not changed
unless ``update=True``. ``nnx.bridge.ToNNX`` wrappers are inspected through the
linen module they wrap.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from inspector._compat import bridged_module, collection_name
from inspector._tracebacks import entry_point
from inspector.capture import CaptureFilter, calls
from inspector.engine.hooks import TraceHooks
from inspector.engine.recorder import Event, EventKind, Recorder
from inspector.engine.runner import Runner
from inspector.inspection.pipeline import InspectRun
from inspector.inspection.plan import Keep, plan_inspection
from inspector.model import Inspection

__all__ = ["NnxInspectRun", "NnxRunner", "collection_name", "inspect_nnx"]


class NnxRunner(Runner):
    """A :class:`Runner` whose flax call merges NNX states and runs a method under ``nnx.capture``.

    Called as ``runner(grouped, *args, **kwargs)`` with ``grouped`` from :meth:`grouped`; returns
    ``(y, {'intermediates': ..., <each updated collection>: ...})``, as a linen ``apply`` with
    ``mutable`` and ``capture_intermediates`` does.
    """

    intercepts = False  # an NNX module's calls are recorded from what nnx.capture returns (_record)

    def __init__(self, model: nnx.Module, method: str, mutable: list[str] | None, hooks: TraceHooks | None):
        types: list[type] = []
        for _, var in nnx.to_flat_state(nnx.state(model)):
            if type(var) not in types:
                types.append(type(var))
        self.types = types
        self.names = [collection_name(t) for t in types]
        graphdef, *states = nnx.split(model, *types)
        self.graphdef, self.templates = graphdef, states
        self.method = method
        self.update_names = [n for n in self.names if n != "params"] if mutable is None else list(mutable)
        # no linen function or filter: invoke() below is the flax call
        super().__init__("apply", fn=None, module=model, mutable=True, capture_intermediates=False, hooks=hooks)

    def grouped(self, model: nnx.Module) -> dict[str, Any]:
        """The module's current state as ``{collection: pure dict}``."""
        _, *states = nnx.split(model, *self.types)
        return {name: nnx.to_pure_dict(s) for name, s in zip(self.names, states)}

    def invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any], capture: CaptureFilter, recorder: Recorder) -> Any:
        grouped, *user_args = args
        states = []
        for name, template in zip(self.names, self.templates):
            state = jax.tree.map(lambda v: v, template)  # a fresh State to fill with traced values
            nnx.replace_by_pure_dict(state, grouped[name])
            states.append(state)
        model = nnx.merge(self.graphdef, *states)
        fn = model if self.method == "__call__" else getattr(model, self.method)
        y, captured = nnx.capture(fn, nnx.Intermediate, method_outputs=nnx.Intermediate)(*user_args, **kwargs)
        _, *after = nnx.split(model, *self.types)
        new = {name: nnx.to_pure_dict(s) for name, s in zip(self.names, after) if name in self.update_names}
        inter = nnx.to_pure_dict(captured)
        self._record(model, inter, recorder)
        return y, {"intermediates": inter, **new}

    @staticmethod
    def _record(model: nnx.Module, inter: dict[str, Any], recorder: Recorder) -> None:
        """Events for every captured value (path order): method outputs vs ``sow``s, with module types."""
        modules = {tuple(str(p) for p in path): mod for path, mod in nnx.iter_modules(model)}

        def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
            module = modules.get(path)
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value, path + (str(key),))
                    continue
                kind: EventKind = "capture" if callable(getattr(type(module), key, None)) else "sow"
                for _ in value if isinstance(value, tuple) else (value,):
                    recorder.events.append(Event(kind, path, str(key), type(module).__name__ if module else ""))

        walk(inter, ())


class NnxInspectRun(InspectRun):
    """``inspect_nnx``'s run: ``run(*args, on_phase=None, **kwargs) -> Inspection`` of
    ``model.<method>(*args, **kwargs)``, through the same pipeline as :class:`InspectRun`
    (timings, phases, ``.show()``)."""

    compiles_ahead = False  # tracing an NNX model mutates it (sow adds attributes): one thread at a time

    runner: NnxRunner

    def __init__(self, model: nnx.Module, method: str = "__call__", mutable: list[str] | None = None,
                 keep: Keep = "arrays", update: bool = False):
        self.update = update
        # NNX returns (y, state) like a linen apply with mutable and capture_intermediates set
        self._set_up("apply", model, keep, lambda in_call, lean: NnxRunner(
            model, method, mutable, plan_inspection("apply", True, True, keep, in_call, lean)))

    @property
    def model(self) -> nnx.Module:
        model: nnx.Module = self.module
        return model

    def _flax_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.runner.grouped(self.module), *args), kwargs

    def _finish(self, insp: Inspection) -> None:
        insp.notes.append("nnx: intermediates are ordered by module path (nnx.capture records no call order)")
        if self.update:
            for name, pure in insp.state.items():
                if name in self.runner.names:
                    sub = nnx.state(self.module, self.runner.types[self.runner.names.index(name)])
                    nnx.replace_by_pure_dict(sub, pure)
                    nnx.update(self.module, sub)


@entry_point
def inspect_nnx(model: nnx.Module, *args: Any, method: str = "__call__", mutable: list[str] | None = None,
                keep: Keep = "arrays", update: bool = False, **kwargs: Any) -> Inspection:
    """Inspects ``model.<method>(*args, **kwargs)`` once: variables per type, what the call changed
    (every collection but ``params`` by default), and every method output and sow. The one-shot
    form, like :func:`inspector.inspect`; :class:`NnxInspectRun` is the reusable run (compiled
    once per signature, with ``.show()``)."""
    if isinstance(model, nnx.bridge.ToNNX):
        return _inspect_bridge(model, *args, method=method, keep=keep, **kwargs)
    return NnxInspectRun(model, method, mutable, keep, update)(*args, **kwargs)


def _inspect_bridge(model: Any, *args: Any, method: str, keep: Keep, **kwargs: Any) -> Inspection:
    """A ``ToNNX(linen_module)``: the linen module with its variables, through the linen path."""
    variables: dict[str, dict[str, Any]] = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        if isinstance(var, nnx.RngState):
            continue
        node = variables.setdefault(collection_name(type(var)), {})
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = var[...]
    linen = bridged_module(model)
    fn = (lambda m, *a, **k: m(*a, **k)) if method == "__call__" else (
        lambda m, *a, **k: getattr(m, method)(*a, **k))
    mutable = [c for c in variables if c != "params"]
    insp = InspectRun("apply", fn, linen, mutable or False, calls, keep)(variables, *args, **kwargs)
    insp.notes.append(f"nnx.bridge.ToNNX: inspected the linen module inside ({type(linen).__name__})")
    return insp
