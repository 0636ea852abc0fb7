"""Gradients beside activations: :func:`inspect_grad`.

``loss_fn(bound_module, *args)`` is run as ``flax.linen.apply`` runs a function, under
``jax.value_and_grad`` inside one jitted program per signature (:class:`~inspector.engine.runner.Runner`).
The loss is differentiated with respect to the ``params`` collection and to a zero added to the
output of every captured call (what flax's ``perturb`` does by hand): that zero's gradient is the
gradient of the loss with respect to the call's output.

Which calls are captured, and the shapes of their outputs, are known only once the model has
run, so each new signature traces the model twice: once abstractly (``jax.eval_shape``, no
computation) to find the captured calls, then the differentiated run. A captured value that is
not what one call returned (a call inside ``nn.scan`` or ``nn.vmap``, whose captured values are
stacked over the loop or batch) gets no gradient, and a note says so.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core.scope import CollectionFilter

from inspector import stats
from inspector.capture import CaptureFilter, recorded_call
from inspector.model import Inspection, VariableTree, format_path
from inspector.names import Path
from inspector.engine.hooks import TiedSummaries
from inspector.engine.recorder import Recorder
from inspector.engine.runner import FLAX_ENTRIES, Runner, fresh_containers
from inspector.inspection.assemble import assemble, leaf_maker
from inspector.inspection.pipeline import InspectRun, default_capture
from inspector.inspection.plan import (
    INTERMEDIATES, Keep, Plan, Slot, SlotCollector, key_str, plan_inspection, summarize_in_call,
)

CallSite = tuple[Path, str, int]
"""A call: module path, method, and how many calls of that path and method came before it."""


@dataclasses.dataclass(frozen=True)
class Tap:
    """One output array of a captured call that gets a gradient: the call (``site``), the array's
    position among the leaves of what it returned (``leaf``), and the call's index among the
    captured values of its path and method (``captured``, which counts values passed in too)."""

    site: CallSite
    leaf: int
    captured: int
    path: Path  # of the activation's Leaf: module path, ``method[captured]``, path inside the output
    shape: tuple[int, ...]
    dtype: Any


class _NumberedCalls:
    """A method interceptor that numbers every call of a bound module (outside lifted transforms'
    structure-only passes) and either notes what it returned (``perturb`` is None) or adds the
    given zeros to the outputs of the tapped calls."""

    def __init__(self, taps: list[Tap] | None = None, perturb: list[Any] | None = None):
        self.seen: dict[tuple[Path, str], int] = {}
        self.returned: dict[CallSite, Any] = {}
        self.add: dict[CallSite, list[tuple[int, Any]]] = {}
        for tap, p in zip(taps or (), perturb or ()):
            self.add.setdefault(tap.site, []).append((tap.leaf, p))
        self.recording = perturb is None

    def __call__(self, next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        y = next_fun(*args, **kwargs)
        module, name = context.module, context.method_name
        if not recorded_call(module, name):
            return y
        key = (tuple(module.path), name)
        index = self.seen.get(key, 0)
        self.seen[key] = index + 1
        site = key + (index,)
        if self.recording:
            self.returned[site] = y
            return y
        adds = self.add.get(site)
        if not adds:
            return y
        leaves, treedef = jax.tree.flatten(y)
        for i, p in adds:
            leaves[i] = leaves[i] + p
        return jax.tree.unflatten(treedef, leaves)


def _differentiable(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(x.dtype, jnp.inexact)


def _shapes(tree: Any) -> list[tuple[tuple[int, ...], Any] | None]:
    return [(tuple(a.shape), a.dtype) if hasattr(a, "shape") else None for a in jax.tree.leaves(tree)]


def _captured(inter: Any, path: Path, name: str) -> tuple | None:
    node = inter
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    value = node.get(name) if isinstance(node, Mapping) else None
    return value if isinstance(value, tuple) else None


def find_taps(returned: dict[CallSite, Any], inter: Any) -> tuple[list[Tap], list[str]]:
    """The outputs to tap: of each call whose captured value (in flax's ``intermediates``
    ``inter``) is what the call returned, every floating-point array; and a note for each captured
    path and method whose values are not (they were stacked by a lifted transform)."""
    by_call: dict[tuple[Path, str], list[Any]] = {}
    for (path, name, _), y in returned.items():
        by_call.setdefault((path, name), []).append(y)
    taps, notes = [], []
    for (path, name), outputs in by_call.items():
        values = _captured(inter, path, name)
        if values is None:
            continue  # not selected by the capture filter
        offset = len(values) - len(outputs)  # values at the front were passed in, not returned
        if offset < 0 or any(_shapes(v) != _shapes(y) for v, y in zip(values[offset:], outputs)):
            notes.append(f"no gradient: {format_path(path)}:{name} runs inside a lifted transform (nn.scan, nn.vmap) "
                         "whose captured values are not what one call returned")
            continue
        for i, y in enumerate(outputs):
            flat, _ = jax.tree_util.tree_flatten_with_path(y)
            for leaf, (kp, a) in enumerate(flat):
                if _differentiable(a):
                    sub = tuple(key_str(k) for k in kp)
                    taps.append(Tap((path, name, i), leaf, offset + i, path + (f"{name}[{offset + i}]",) + sub,
                                    tuple(a.shape), a.dtype))
    return taps, notes


@dataclasses.dataclass
class _Result:
    """What :meth:`GradRunner.invoke` hands :meth:`GradHooks.after`: flax's result, the gradients, notes."""

    flax: Any
    params: Any
    taps: list[Tap]
    tapped: list[Any]
    notes: list[str]


class GradRunner(Runner):
    """A :class:`Runner` whose flax call is ``apply(loss_fn, module)`` differentiated: with respect
    to ``params`` and to the outputs of the captured calls (see the module docstring)."""

    def __init__(self, loss_fn: Callable, module: nn.Module, mutable: CollectionFilter, capture: CaptureFilter,
                 has_aux: bool, hooks: GradHooks):
        super().__init__("apply", loss_fn, module, mutable, capture, hooks=hooks)
        self.has_aux = has_aux

    def invoke(self, args: tuple, kwargs: dict, capture: CaptureFilter, recorder: Recorder) -> Any:
        if not args or not isinstance(args[0], Mapping):
            error = flax.errors.ApplyScopeInvalidVariablesTypeError()
            given = _described(args[0]) if args else "nothing"
            error.add_note(f"inspector: inspect_grad(loss_fn, module)(variables, *args) was given {given} as "
                           "variables, where a dict of collections ({'params': ...}) belongs; are the "
                           "variables and the inputs swapped?")
            raise error
        variables, *rest = args
        apply = FLAX_ENTRIES["apply"](self.fn, self.module, mutable=self.mutable, capture_intermediates=capture)
        returns_tuple = self.mutable is not False or bool(capture)

        def run(params: Any, taps: list[Tap] | None, perturb: list[Any] | None) -> tuple[Any, Any]:
            calls = _NumberedCalls(taps, perturb)
            given = dict(variables)
            if params is not None:
                given["params"] = params
            own_rest, own_kwargs = fresh_containers((rest, kwargs))  # a model may write into a dict it is given
            with nn.intercept_methods(calls):
                out = apply(given, *own_rest, **own_kwargs)
            return out, calls

        params = variables.get("params") if isinstance(variables, Mapping) else None
        taps, notes = self._taps(run, params, returns_tuple, recorder)
        fixed = _not_differentiable(params)
        if fixed:
            notes.append("no gradient for params of integer or bool dtype (not differentiable): "
                         + ", ".join(fixed))

        def loss(params: Any, perturb: list[Any]) -> tuple[Any, Any]:
            out, _ = run(params, taps, perturb)
            y = out[0] if returns_tuple else out
            return self._loss_of(y), out

        zeros = [jnp.zeros(t.shape, t.dtype) for t in taps]
        (_, out), (g_params, g_taps) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True, allow_int=bool(fixed))(params, zeros)
        if fixed:  # jax's float0 zeros for integer params: no gradient, and said so in the notes
            g_params = jax.tree.map(lambda g: None if g.dtype == jax.dtypes.float0 else g, g_params)
        return _Result(out, g_params, taps, g_taps, notes)

    def _loss_of(self, y: Any) -> Any:
        """The loss in what ``loss_fn`` returned: ``y``, or ``y[0]`` with ``has_aux``; a clear error
        where that is not a scalar."""
        if self.has_aux:
            if not isinstance(y, (tuple, list)) or len(y) != 2:
                raise TypeError(f"inspect_grad(..., has_aux=True): loss_fn must return a pair (loss, aux), "
                                f"but it returned {_described(y)}")
            y = y[0]
        shape = getattr(y, "shape", None)
        if isinstance(y, (tuple, list)) or (shape is not None and shape != ()):
            raise TypeError(f"inspect_grad: the loss must be a scalar, but loss_fn returned {_described(y)}"
                            + ("" if self.has_aux else "; if it returns (loss, aux), pass has_aux=True"))
        return y

    def _taps(self, run: Callable, params: Any, returns_tuple: bool, recorder: Recorder) -> tuple[list[Tap], list[str]]:
        """The captured calls' outputs, found by running the model abstractly. The recorder records
        only the differentiated run: what it saw here is forgotten."""
        saved = {f.name: getattr(recorder, f.name) for f in dataclasses.fields(recorder)}
        for name, value in saved.items():
            if isinstance(value, (list, dict, set)) and name != "patches":
                setattr(recorder, name, type(value)())
        seen: dict[str, Any] = {}

        def shapes(params: Any) -> Any:
            out, calls = run(params, None, None)
            seen["returned"] = {k: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)
                                                if isinstance(a, jax.Array) else a, v)
                                for k, v in calls.returned.items()}
            state = out[1] if returns_tuple else None
            return state.get(INTERMEDIATES, {}) if isinstance(state, Mapping) else {}

        try:
            inter = jax.eval_shape(shapes, params)
        finally:
            error_site = recorder.error_site  # where this pass raised, for the error's note
            for name, value in saved.items():
                setattr(recorder, name, value)
            recorder.error_site = recorder.error_site or error_site
        return find_taps(seen["returned"], inter)


def _described(x: Any) -> str:
    """``float32[2,4]``-like words for an array, else the type's name (never a value: it may be huge)."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array {x.dtype}[{','.join(map(str, x.shape))}]"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    return f"a {type(x).__name__}"


def _not_differentiable(params: Any) -> list[str]:
    """Paths of the params leaves of integer or bool dtype."""
    if params is None:
        return []
    return [jax.tree_util.keystr(p, simple=True, separator="/")
            for p, leaf in jax.tree_util.tree_leaves_with_path(params)
            if hasattr(leaf, "dtype") and not jnp.issubdtype(leaf.dtype, jnp.inexact)]


@dataclasses.dataclass
class GradPlan:
    """What the trace of a gradient run recorded: the inspection's own plan (``inspection``), and
    the gradients' slots: of ``params`` and of each tapped output (with its :class:`Tap`)."""

    inspection: Plan
    grads: Plan
    params: list[Slot]
    taps: list[tuple[Tap, Slot]]
    notes: list[str]


class GradHooks:
    """The :class:`~inspector.engine.hooks.TraceHooks` of a :class:`GradRunner`: the inspection of the call as
    :class:`~inspector.inspection.plan.InspectionHooks` makes it, with the gradients' statistics alongside.
    The result handed back is ``(flax's result, (params gradients, tapped gradients))``. Nothing is tied
    where it is captured (the differentiated program summarizes after the call)."""

    ties_captures = False

    def __init__(self, mutable: CollectionFilter, capture: CaptureFilter, keep: Keep, in_call: bool = True,
                 lean: bool = False) -> None:
        self.inspection = plan_inspection("apply", mutable, capture, keep, in_call, lean)
        self.in_call = in_call

    def at_capture(self, value: Any, tied: TiedSummaries) -> Any:
        return value

    def after(self, inputs: tuple[tuple[Any, ...], dict[str, Any]], result: _Result, recorder: Recorder,
              tied: TiedSummaries) -> tuple[Any, Any, GradPlan]:
        flax_result, stats, plan = self.inspection.after(inputs, result.flax, recorder, tied)
        collector = SlotCollector()
        params = collector.slots(result.params, ("params",), "out", (1, 0)) if result.params is not None else []
        taps = [(t, collector.slot(t.path, "out", (1, 1, i), g))
                for i, (t, g) in enumerate(zip(result.taps, result.tapped))]
        words, summarized = summarize_in_call(collector.arrays, recorder.multi_device, self.in_call)
        grads = Plan([], [], {}, [], {}, False, collector.described, [], summarized=summarized)
        return ((flax_result, (result.params, result.tapped)), (stats, words),
                GradPlan(plan, grads, params, taps, result.notes))


class GradRun(InspectRun):
    """``inspect_grad``'s run: ``run(variables, *args, rngs=None, **kwargs) -> Inspection`` with the loss,
    ``grads`` and each captured call's gradient."""

    def __init__(self, loss_fn: Callable, module: nn.Module, mutable: CollectionFilter, capture: CaptureFilter,
                 has_aux: bool, keep: Keep):
        self.has_aux = has_aux
        self._set_up("apply", module, keep, lambda in_call, lean: GradRunner(
            loss_fn, module, mutable, capture, has_aux, GradHooks(mutable, capture, keep, in_call, lean)))
        functools.update_wrapper(self, loss_fn, updated=())

    def _assemble(self, args: tuple, result: Any, stats_arrays: Any, plan: GradPlan, timings: Any,
                  described: Any, **when: Any) -> Inspection:
        flax_result, _ = result
        (words, deltas, dropped, buffers), grad_words = stats_arrays
        words, deltas, grad_words = stats.to_host([words, deltas, grad_words])
        insp = assemble("apply", self.module, args[0], flax_result, (words, deltas, dropped, buffers),
                                plan.inspection, timings, self.keep, described, **when)
        leaf = leaf_maker(plan.grads, grad_words, {"out": result, "in": None, "dropped": None}, insp.device)
        insp.grads = VariableTree.of_leaves("grads", [leaf(s) for s in plan.params])
        kept = self.keep != "stats"
        by_call: dict[tuple[Path, str, int], list] = {}
        for tap, slot in plan.taps:
            by_call.setdefault((tap.site[0], tap.site[1], tap.captured), []).append(leaf(slot, kept))
        for call in insp.calls:
            if not call.sown:
                call.grads = by_call.get((call.path, call.method, call.index))
        insp.loss = float(insp.output[0] if self.has_aux else insp.output)
        insp.notes.extend(plan.notes)
        return insp


def inspect_grad(loss_fn: Callable, module: nn.Module, capture_intermediates: CaptureFilter | None = None,
                 mutable: CollectionFilter = False, has_aux: bool = False, keep: Keep = "arrays") -> GradRun:
    """Gradients beside activations: ``inspect_grad(loss_fn, module)(variables, *args, rngs=None, **kw)``
    runs ``loss_fn(bound_module, *args, **kw)`` (a scalar loss, or ``(loss, aux)`` with ``has_aux``) as
    ``flax.linen.apply`` would and returns an :class:`~inspector.model.Inspection` whose ``output`` is
    what ``loss_fn`` returned, ``loss`` the loss, ``grads`` d loss / d params, and each captured call's
    ``grads`` d loss / d its output. ``capture_intermediates`` defaults to every ``__call__``."""
    return GradRun(loss_fn, module, mutable, default_capture(capture_intermediates), has_aux, keep)
