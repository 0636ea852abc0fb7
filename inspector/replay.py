"""Inputs per captured call (``call.inputs``) and re-running one call (``call.replay()``).

An inspection made by ``fi.inspect*`` of a flax.linen module keeps what re-running its call needs (the run's
function, module, ``mutable``, capture filter and patches, and references to the call's inputs: the arrays
themselves with ``keep="arrays"``, weak references with ``keep="stats"``, so that an inspection never keeps
the caller's arrays alive). Nothing is computed during the inspected call.

``call.inputs`` re-runs the model's Python once, jitted, with :func:`flax.linen.intercept_methods`, and records
the positional and keyword arguments of every call in the run's own trace, numbered as the inspection numbers
them (``path:method[index]``). Their statistics are the package's exact ones
(:func:`inspector.inspection.variables.describe_exactly`), computed once for every captured call; the arrays
are kept only with ``keep="arrays"``.

``call.replay()`` re-runs the model once more to record that call's arguments, its module (unbound), the
module's variables as the call saw them (a mutable collection as updated by earlier calls) and its RNG streams
(keys, fold-in suffixes and counters, so a ``Dropout`` draws the same mask), then runs the one method through
``nn.apply`` under ``jax.jit`` (compiled once per input shapes). ``params=``, ``variables=``, ``inputs=``,
``kwargs=`` and ``rngs=`` replace what was recorded, to patch one layer without re-running the model.

Not defined for (a :class:`ReplayError` naming the module path and method says so): a sown value; a call inside
a lifted transform's body (``nn.scan``, ``nn.vmap``, ``nn.remat``, ...: its inputs are values of one traced
iteration, not of the run); an inspection that was pickled or copied, or made by ``fi.apply`` or for NNX;
``replay`` of an ``init`` inspection; ``replay`` of a call with an argument that is neither an array nor a
plain value (a module, a function).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from inspector.engine.call_inputs import CallInputs
from inspector.engine.signature import weakly
from inspector.model import Inspection, Leaf, MethodCall
from inspector.names import Path, format_key, safe

_ATTR = "_inspector_replay"  # on an inspection and on each of its calls: the _ReplaySource
_INPUTS = "_inspector_inputs"  # on a call: its inputs' leaves, once computed

CallKey = tuple[Path, str, int]
_PLAIN = (bool, int, float, complex, str, bytes, type(None), enum.Enum)


class ReplayError(RuntimeError):
    """A call's inputs cannot be recorded, or the call cannot be replayed; the message names the call
    (``module path:method[index]``) and why."""


# -- what is recorded for one call --------------------------------------------------------
@dataclasses.dataclass
class _Recorded:
    """One call's arguments (``treedef`` over ``leaves``; array leaves concrete after the run), and with
    ``state``, what replaying it needs."""

    treedef: Any
    leaves: list[Any]
    inside: str = ""  # the lifted transform the call ran inside ('' for the run's own trace)
    module: Any = None  # the module, unbound
    variables: Any = None  # its variables as the call saw them (every collection but intermediates)
    rng_keys: dict[str, Any] = dataclasses.field(default_factory=dict)
    rng_suffixes: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    rng_counters: dict[Any, Any] = dataclasses.field(default_factory=dict)
    programs: dict[Any, Callable[..., Any]] = dataclasses.field(default_factory=dict)  # jitted, by statics

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = jax.tree.unflatten(self.treedef, self.leaves)
        return tuple(args), dict(kwargs)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _inside(leaves: list[Any], top: Any) -> bool:
    """True if a tracer among ``leaves`` belongs to a trace nested in ``top`` (a lifted transform's body)."""
    from inspector._compat import staged_in

    return any(isinstance(x, jax.core.Tracer) and not staged_in(x, top) for x in leaves)


class _ReplaySource:
    """What re-running an inspected call needs, and what was recorded from it. Pickling or copying an
    inspection keeps none of it: the copy says so."""

    def __init__(self, runner: Any, kind: str, inputs: CallInputs, kept: bool, reason: str | None = None):
        self.runner, self.kind, self.kept, self.reason = runner, kind, kept, reason
        leaves, self.treedef = inputs.leaves, inputs.treedef
        # an array is held weakly unless the inspection keeps arrays: the caller's arrays stay the caller's
        self.leaves: list[Any] = leaves if kept else [weakly(x) for x in leaves]
        self.inspection: weakref.ref[Inspection] | None = None  # weakly: a call holds this, no cycle
        self.recorded: dict[CallKey, _Recorded] | None = None  # every call's arguments (kept arrays only)
        self.states: dict[CallKey, _Recorded] = {}  # what replaying each call needs, once asked
        self.lock = threading.RLock()

    def __reduce__(self) -> Any:
        return (_ReplaySource, (None, self.kind, CallInputs.of((), {}), False,
                                "not kept when the inspection was copied or pickled"))

    def __deepcopy__(self, memo: dict[str, Any]) -> _ReplaySource:
        return self

    def inputs(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The inspected call's arguments; raises if the caller's arrays are gone (``keep="stats"``)."""
        values = []
        for x in self.leaves:
            if isinstance(x, weakref.ref):
                x = x()
                if x is None:
                    raise ReplayError("the inspected call's input arrays are no longer alive (an inspection made "
                                      "with keep='stats' holds them weakly); inspect with keep='arrays'")
            values.append(x)
        args, kwargs = jax.tree.unflatten(self.treedef, values)
        return args, kwargs

    # -- the re-run --------------------------------------------------------------------
    def record(self, only: CallKey | None = None) -> dict[CallKey, _Recorded]:
        """Re-runs the model (jitted) and returns the arguments of every call in its own trace (``only``:
        that call's, with what replaying it needs), arrays concrete."""
        from flax.core import unfreeze

        import flax.linen as nn

        from inspector._compat import current_trace
        from inspector.capture import recorded_call
        from inspector.engine.recorder import Recorder
        from inspector.engine.runner import Runner, fresh_containers
        from inspector.engine.signature import is_array

        runner = self.runner
        args, kwargs = fresh_containers(self.inputs())
        leaves, treedef = jax.tree.flatten((args, kwargs))
        dyn_at = [i for i, leaf in enumerate(leaves) if is_array(leaf)]
        found: dict[CallKey, _Recorded] = {}

        def run(dyn: list[Any]) -> Any:
            full = list(leaves)
            for i, a in zip(dyn_at, dyn):
                full[i] = a
            a, k = jax.tree.unflatten(treedef, full)
            top = current_trace()
            seen: dict[tuple[Path, str], int] = {}
            out: dict[CallKey, Any] = {}

            def intercept(next_fun: Callable[..., Any], c_args: tuple[Any, ...], c_kwargs: dict[str, Any],
                          context: Any) -> Any:
                module, name = context.module, context.method_name
                if not recorded_call(module, name):
                    return next_fun(*c_args, **c_kwargs)
                path = tuple(module.path)
                index = seen.get((path, name), 0)
                seen[(path, name)] = index + 1
                key = (path, name, index)
                if only is not None and key != only:
                    return next_fun(*c_args, **c_kwargs)
                c_leaves, c_tree = jax.tree.flatten((tuple(c_args), dict(c_kwargs)))
                if _inside(c_leaves, top):
                    found[key] = _Recorded(c_tree, c_leaves, inside="a lifted transform (nn.scan, nn.vmap, "
                                                                    "nn.remat, ...)")
                    return next_fun(*c_args, **c_kwargs)
                rec = _Recorded(c_tree, [None if isinstance(x, jax.core.Tracer) else x for x in c_leaves])
                traced = {i: x for i, x in enumerate(c_leaves) if isinstance(x, jax.core.Tracer)}
                state: dict[str, Any] = {}
                if only is not None:
                    scope = module.scope
                    rec.module = module.clone(parent=None, _deep_clone=True)
                    # flax internals (0.12.8): a scope's RNG streams (LazyRng: key and static fold-in suffix)
                    # and its counters, which say how many keys each stream has drawn so far
                    rec.rng_suffixes = {n: tuple(r.suffix) for n, r in scope.rngs.items()}
                    rec.rng_counters = _copy_counters(scope.rng_counters)
                    state = {"variables": {c: v for c, v in unfreeze(module.variables).items()
                                           if c != "intermediates"},
                             "rngs": {n: r.rng for n, r in scope.rngs.items()}}
                found[key] = rec
                out[key] = (traced, state)
                return next_fun(*c_args, **c_kwargs)

            recorder = Recorder()
            recorder.patches = runner.patches
            with nn.intercept_methods(recorder.intercept), nn.intercept_methods(intercept):
                Runner.invoke(runner, a, k, runner.capture, recorder)
            return out

        values = jax.jit(run)([leaves[i] for i in dyn_at])
        for key, (traced, state) in values.items():
            rec = found[key]
            for i, x in traced.items():
                rec.leaves[i] = x
            if state:
                rec.variables, rec.rng_keys = state["variables"], state["rngs"]
        return found

    def recorded_all(self) -> dict[CallKey, _Recorded]:
        """Every call's arguments: recorded once; kept only with ``keep="arrays"``."""
        with self.lock:
            if self.recorded is not None:
                return self.recorded
            found = self.record()
            if self.kept:
                self.recorded = found
            return found

    def state(self, key: CallKey) -> _Recorded:
        """What replaying the call ``key`` needs: recorded once per call, on the first replay."""
        with self.lock:
            rec = self.states.get(key)
            if rec is None:
                rec = self.record(only=key).get(key)
                if rec is None:
                    raise ReplayError(safe(f"{format_key(*key)}: the re-run made no such call"))
                self.states[key] = rec
            return rec


def _copy_counters(counters: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of flax's nested RNG counters; the keys (flax's child sentinel object among them) not copied."""
    return {k: _copy_counters(v) if isinstance(v, dict) else v for k, v in counters.items()}


# -- the inputs' leaves ---------------------------------------------------------------------
def _part(k: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _leaves(rec: _Recorded, kept: bool) -> list[tuple[Path, Any]]:
    """``(path, value)`` for each argument: ``('args', '0', ...)`` or ``('kwargs', 'train', ...)``."""
    args, kwargs = rec.arguments()
    out: list[tuple[Path, Any]] = []
    for head, tree in (("args", args), ("kwargs", kwargs)):
        flat, _ = jax.tree_util.tree_flatten_with_path(tree)
        out += [((head,) + tuple(_part(k) for k in p), v) for p, v in flat]
    return out


def _describe(calls: list[tuple[MethodCall, _Recorded]], kept: bool) -> None:
    """Sets each call's inputs: a :class:`Leaf` per argument, array statistics computed in one go."""
    from inspector import stats
    from inspector.inspection.assemble import devices_text
    from inspector.inspection.variables import describe_exactly

    per_call = [(call, _leaves(rec, kept)) for call, rec in calls]
    arrays = [v for _, items in per_call for _, v in items if _is_array(v) and stats.supported(v)]
    described = iter(describe_exactly(arrays))
    for call, items in per_call:
        leaves = []
        for path, v in items:
            if _is_array(v) and stats.supported(v):
                x = v if isinstance(v, jax.Array) else np.asarray(v)
                device = devices_text(x.sharding.device_set) if isinstance(x, jax.Array) else "host"
                leaves.append(Leaf(path, tuple(np.shape(x)), str(x.dtype), device, stats=next(described),
                                   fetch=functools.partial(np.asarray, x) if kept else None,
                                   handle=x if kept else None))
            elif _is_array(v):
                leaves.append(Leaf(path, tuple(np.shape(v)), str(v.dtype), opaque=f"{v.dtype} array"))
            else:
                leaves.append(Leaf(path, opaque=safe(repr(v))[:80]))
        call.__dict__[_INPUTS] = leaves


def _source(call: MethodCall) -> _ReplaySource:
    source: _ReplaySource | None = call.__dict__.get(_ATTR)
    where = f"{call.key} ({call.module_type}, method {call.method!r})"
    if source is None:
        raise ReplayError(safe(f"{where}: nothing was kept to re-run it; inputs are recorded and calls replayed "
                               "for inspections made by fi.inspect, fi.inspect_apply, fi.inspect_init or "
                               "fi.inspect_init_with_output of a flax.linen module"))
    if source.reason is not None:
        raise ReplayError(safe(f"{where}: {source.reason}"))
    if call.sown:
        raise ReplayError(safe(f"{where}: a value sown with self.sow, not a method call: it has no inputs"))
    return source


def _check(call: MethodCall, rec: _Recorded | None) -> _Recorded:
    where = f"{call.key} ({call.module_type}, method {call.method!r})"
    if rec is None:
        raise ReplayError(safe(f"{where}: the re-run made no such call"))
    if rec.inside:
        raise ReplayError(safe(f"{where}: the call runs inside {rec.inside}; its inputs are values of the "
                               "transform's traced body, one iteration's, so recording them or replaying one "
                               "iteration is not defined: replay the module that applies the transform"))
    return rec


def inputs_of(call: MethodCall) -> list[Leaf]:
    """:attr:`MethodCall.inputs`: a :class:`Leaf` per positional and keyword argument of ``call``, with
    statistics (arrays only with ``keep="arrays"``); a plain value (``train=True``) as an opaque leaf. The
    first request re-runs the model once and describes every captured call's inputs."""
    known = call.__dict__.get(_INPUTS)
    if known is not None:
        return list(known)
    source = _source(call)
    with source.lock:
        known = call.__dict__.get(_INPUTS)
        if known is not None:
            return list(known)
        found = source.recorded_all()
        todo = [(call, _check(call, found.get((tuple(call.path), call.method, call.index))))]
        insp = source.inspection() if source.inspection is not None else None
        for other in insp.calls if insp is not None else ():  # every other captured call, in one go
            rec = found.get((tuple(other.path), other.method, other.index))
            if other is call or _INPUTS in other.__dict__ or other.sown or rec is None or rec.inside:
                continue
            todo.append((other, rec))
        _describe(todo, source.kept)
    return list(call.__dict__[_INPUTS])


def computed_inputs(call: MethodCall) -> list[Leaf] | None:
    """The inputs of ``call`` if they were already computed (never re-runs anything), else None."""
    known = getattr(call, "__dict__", {}).get(_INPUTS)
    return list(known) if known is not None else None


def arguments(call: MethodCall) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arrays and values ``call`` was called with, ``(args, kwargs)``: to modify and pass to
    :func:`replay`'s ``inputs``/``kwargs``. Re-runs the model once (then kept for the call's replays)."""
    source = _source(call)
    return _check(call, source.state((tuple(call.path), call.method, call.index))).arguments()


def replay(call: MethodCall, *, params: Any = None, variables: Any = None, inputs: Any = None,
           kwargs: dict[str, Any] | None = None, rngs: Any = None) -> Any:
    """:meth:`MethodCall.replay`: runs ``call``'s method of its module alone, jitted (compiled once per input
    shapes), on what it was called with in the inspected run.

    Args:
      params: the module's ``params`` collection (``{'kernel': ..., 'bias': ...}`` for a Dense) in place of
        the recorded one.
      variables: every collection of the module's variables in place of the recorded ones (``params=`` then
        replaces ``params`` in these).
      inputs: the positional arguments in place of the recorded ones: a tuple, or one value for a call with
        one positional argument.
      kwargs: keyword arguments that replace recorded ones of the same name (or are added).
      rngs: flax's ``rngs`` (a key, or a dict of keys per stream) in place of the recorded streams; by default
        the call draws the keys it drew in the inspected run.

    Returns:
      What the method returns, or flax's ``(y, state)`` when the module holds a collection the inspected run
      could mutate (``state``: that collection of the module after the call).

    Raises:
      ReplayError: where a replay is not defined for the call (see :mod:`inspector.replay`).

    A patch of the inspection (``patches=``, :func:`~inspector.intervene`) acts on the recorded inputs (they are
    what the patched run passed) but not on the replayed method's own output.
    """
    from flax.core.scope import in_filter

    import flax.linen as nn

    source = _source(call)
    where = f"{call.key} ({call.module_type}, method {call.method!r})"
    if source.kind != "apply":
        raise ReplayError(safe(f"{where}: replay re-runs a call of an apply inspection; this one ran "
                               f"{source.kind}, whose variables are made during the call"))
    rec = _check(call, source.state((tuple(call.path), call.method, call.index)))
    odd = [v for v in rec.leaves if not _is_array(v) and not isinstance(v, _PLAIN)]
    if odd and inputs is None and kwargs is None:
        raise ReplayError(safe(f"{where}: its inputs are not arrays or plain values ({type(odd[0]).__name__}); "
                               "pass inputs= and kwargs= to replay it"))
    args, kw = rec.arguments()
    if inputs is not None:
        args = tuple(inputs) if isinstance(inputs, tuple) else (inputs,)
    if kwargs:
        kw = {**kw, **kwargs}
    own = dict(rec.variables) if variables is None else dict(variables)
    if params is not None:
        own["params"] = params
    mutable = [c for c in own if in_filter(source.runner.mutable, c)]
    leaves, treedef = jax.tree.flatten((args, kw))
    dyn_at = tuple(i for i, x in enumerate(leaves) if _is_array(x))
    statics = tuple((i, x) for i, x in enumerate(leaves) if i not in dyn_at)
    try:
        cache_key: Any = (treedef, statics, tuple(mutable), rngs is None)
        hash(cache_key)
    except TypeError:
        cache_key = None
    program = rec.programs.get(cache_key) if cache_key is not None else None
    if program is None:
        module, method = rec.module, call.method
        suffixes, counters = rec.rng_suffixes, rec.rng_counters

        def run(own: Any, keys: Any, dyn: list[Any]) -> Any:
            full = list(leaves)
            for i, x in zip(dyn_at, dyn):
                full[i] = x
            a, k = jax.tree.unflatten(treedef, full)

            def body(m: Any, *a: Any, **k: Any) -> Any:
                if rngs is None:
                    from flax.core.scope import LazyRng

                    # flax internals (0.12.8): the streams and counters the call had in the inspected run
                    m.scope.rngs = {n: LazyRng(keys[n], suffixes[n]) for n in keys}
                    m.scope.rng_counters = _copy_counters(counters)
                return getattr(m, method)(*a, **k)

            return nn.apply(body, module, mutable=mutable or False)(own, *a, rngs=keys if rngs is not None else None,
                                                                    **k)

        program = jax.jit(run)
        if cache_key is not None:
            rec.programs[cache_key] = program
    keys = rec.rng_keys if rngs is None else rngs
    return program(own, keys, [leaves[i] for i in dyn_at])


# -- the hook: kept by the inspect_* runs ---------------------------------------------------
def remember(run: Any, insp: Inspection, inputs: CallInputs) -> None:
    """Called by an inspected run after it built ``insp``: keeps what recording a call's inputs and
    replaying it need (references only; nothing is computed). Never fails the call."""
    try:
        runner = getattr(run, "runner", None)
        reason = None
        if runner is None or getattr(runner, "fn", None) is None or not getattr(runner, "intercepts", False):
            reason = "inputs are recorded and calls replayed for flax.linen runs only"
        # flattened at once: the caller may change its dicts afterwards
        source = _ReplaySource(runner, run.kind, inputs, insp.kept, reason)
        source.inspection = weakref.ref(insp)
        insp.__dict__[_ATTR] = source
        insp.annotate_calls(_ATTR, source)  # on each call, once its calls are built
    except Exception:  # noqa: BLE001 - keeping the inputs never fails a call
        return


__all__ = ["ReplayError", "inputs_of", "computed_inputs", "arguments", "replay", "remember"]
