"""The operation behind the first NaN/Inf: ``insp.first_nonfinite().origin`` (also ``insp.nonfinite_origin()``).

An inspection that found a non-finite value keeps what re-running its call needs (the run's function, module,
``mutable``, capture filter and patches, and the call's inputs; nothing is kept otherwise). Asking for the origin
traces the call once more with :func:`jax.make_jaxpr` (one trace, no compile of the whole program) and evaluates
the jaxpr equation by equation, on the device, keeping for every non-finite value where it was *born*: the first
equation whose output is non-finite while its inputs are finite (a ``log`` of a zero, a ``0/0``), or the input
that already held it. Births flow along the data: an op whose inputs hold a NaN passes the earliest birth on, and
one whose output is finite again (a masked ``where``, ``exp(-inf)``) ends the chain. The origin is the birth of
the first non-finite output of the first non-finite captured call, so a NaN made and masked away elsewhere is not
blamed. Only the equations that the call's output depends on are evaluated.

Calls inside ``jit``, ``custom_jvp``/``custom_vjp``, ``checkpoint``/``remat``, ``cond``, ``while_loop`` and
``scan`` (``nn.scan``) are stepped into when their output is non-finite (a loop iteration by iteration); any other
primitive with a body is reported itself. Each origin names the primitive, the user's ``file:line`` (jax's source
information of the equation), flax's module path from the equation's name stack, and the statistics of its
operands and results. Computing it never raises: a failure is held in :attr:`Origin.reason`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from typing import Any

import jax

from inspector.engine.call_inputs import CallInputs
from inspector.model import Inspection, MethodCall
from inspector.names import safe
from inspector.origin_model import Operand, Origin
from inspector.origin_model import OriginKind as OriginKind, describe as describe  # public names, kept here too
from inspector.origin_search import _Birth, _finite_prefix, _has_nonfinite, _module_starts, _needed, _Search


# -- what re-running needs, kept by an inspection that found a NaN --------------------------
def _key_parts(path: Any) -> tuple[str, ...]:
    out = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
        else:
            out.append(str(k))
    return tuple(out)


class Rerun:
    """What re-running an inspected call needs, held while the inspection lives (only by an inspection
    that found a NaN or Inf). Computes the :class:`Origin` once, on first request. Pickling or copying an
    inspection keeps no arrays or functions: the copy's origin says it was not kept."""

    def __init__(self, runner: Any, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], call: MethodCall | None,
                 reason: str | None = None):
        self.runner, self.kind, self.args, self.kwargs = runner, kind, args, kwargs
        self.reason = reason
        # the call is not held (a call holding this would be a reference cycle keeping its arrays until
        # the cycle collector runs): its key, and where its first non-finite leaf sits in flax's result
        self.key = call.key if call is not None else ""
        self.path: tuple[str, ...] = tuple(call.path) if call is not None else ()
        self.has_call = call is not None
        self.want: tuple[str, ...] | None = None
        leaf = next((leaf for leaf in call.outputs if leaf.nonfinite), None) if call is not None else None
        if call is not None and leaf is not None:
            self.want = (("intermediates",) + tuple(call.path) + (call.method, str(call.index))
                         + tuple(call.output_path(leaf)))
        self._origin: Origin | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> Any:
        return (Rerun, (None, self.kind, (), {}, None, "not kept when the inspection was copied or pickled"))

    def __deepcopy__(self, memo: dict[str, Any]) -> Rerun:
        return self

    def origin(self) -> Origin:
        with self._lock:
            if self._origin is None:
                self._origin = self._compute()
            return self._origin

    def _compute(self) -> Origin:
        key = self.key
        if self.reason is not None:
            return Origin("unknown", key, reason=self.reason)
        try:
            return self._search(key)
        except Exception as e:  # an origin never raises: it says why it is unknown
            if os.environ.get("INSPECTOR_DEBUG_ORIGIN"):  # to debug inspector itself
                raise
            return Origin("unknown", key, reason=safe(f"re-running the call failed: {type(e).__name__}: {e}"))

    def _search(self, key: str) -> Origin:
        from inspector.engine.recorder import Recorder
        from inspector.engine.runner import Runner, fresh_containers
        from inspector.engine.signature import is_array

        runner = self.runner
        args, kwargs = fresh_containers((self.args, self.kwargs))
        leaves, treedef = jax.tree_util.tree_flatten_with_path((args, kwargs))
        dyn_at = [i for i, (_, leaf) in enumerate(leaves) if is_array(leaf)]
        values = [leaf for _, leaf in leaves]

        def flax_call(*dyn: Any) -> Any:
            full = list(values)
            for i, a in zip(dyn_at, dyn):
                full[i] = a
            a, k = jax.tree.unflatten(treedef, full)
            recorder = Recorder()
            recorder.patches = runner.patches
            import flax.linen as nn

            with nn.intercept_methods(recorder.intercept):
                return Runner.invoke(runner, a, k, runner.capture, recorder)

        dyn = [values[i] for i in dyn_at]
        closed, shape = jax.make_jaxpr(flax_call, return_shape=True)(*dyn)
        out_paths = [_key_parts(p) for p, _ in jax.tree_util.tree_flatten_with_path(shape)[0]]
        search = _Search(key)
        births: list[_Birth | None] = []
        for i, a in zip(dyn_at, dyn):
            births.append(search.input_birth(self._input_name(leaves[i][0]), a) if _has_nonfinite(a) else None)
        jaxpr = closed.jaxpr
        target = self._target(out_paths)
        outvars = jaxpr.outvars
        needed = _needed(jaxpr, [outvars[target]] if target is not None else outvars)
        preset, start = None, 0
        if target is not None and not any(births):
            starts = _module_starts(jaxpr, needed, self.path)
            if starts:
                preset, start = _finite_prefix(jaxpr, closed.consts, dyn, needed, starts)
        outs, out_births = search.run(jaxpr, closed.consts, dyn, births, (), needed, preset, start)
        note = None
        if target is not None:
            if out_births[target] is not None:
                return self._with_note(out_births[target].make(), search)  # type: ignore[union-attr]
            note = (f"the re-run found no NaN/Inf at {key} (the compiled program and the re-run, op by op, differ "
                    "numerically); showing the first NaN/Inf the re-run made")
        elif self.has_call:
            note = f"the output of {key} was not found in the re-run; showing the first NaN/Inf it made"
        reaching = [b for b in out_births if b is not None]
        best = min(reaching, key=lambda b: b.seq) if reaching else (
            min(search.births, key=lambda b: b.seq) if search.births else None)
        if best is None:
            return Origin("unknown", key, reason=note or "the re-run made no NaN or Inf")
        found = best.make()
        return self._with_note(dataclasses.replace(found, reason=note) if note else found, search)

    @staticmethod
    def _with_note(origin: Origin, search: _Search) -> Origin:
        if search.notes and origin.reason is None:
            return dataclasses.replace(origin, reason="; ".join(search.notes[:2]))
        return origin

    def _input_name(self, path: Any) -> str:
        """``variables/params/Dense_0/kernel`` or ``args[1]``, for a leaf of ``(args, kwargs)``."""
        parts = _key_parts(path)
        if parts and parts[0] == "0" and len(parts) > 1:  # positional
            position, rest = int(parts[1]), parts[2:]
            if position == 0:
                first = "variables" if self.kind == "apply" else "rngs"
                return "/".join((first,) + rest)
            return f"args[{position - 1}]" + "".join(f"[{r!r}]" if not r.isdigit() else f"[{r}]" for r in rest)
        if parts and parts[0] == "1" and len(parts) > 1:
            return f"{parts[1]}=" + "/".join(parts[2:]) if len(parts) > 2 else f"{parts[1]}="
        return "/".join(parts)

    def _target(self, out_paths: list[tuple[str, ...]]) -> int | None:
        """The position, among the re-run's outputs, of the first non-finite leaf of the first non-finite call."""
        want = self.want
        if want is None:
            return None
        for i, parts in enumerate(out_paths):
            for start in (0, 1):
                if parts[start:] == want:
                    return i
        return None


# -- hooks: kept by the inspect_* runs, read by the inspection ------------------------------
_ATTR = "_inspector_rerun"


_WHEN_BUILT = "found out as the inspection's calls are built"  # on an inspection, until then


def remember(run: Any, insp: Inspection, inputs: CallInputs, when_read: bool = False) -> None:
    """Called by an inspected run after it built ``insp``: if a captured call (or the output) holds a NaN or
    Inf, keeps what re-running the call needs on the inspection (and on its first non-finite call).
    ``when_read``: the inspection's statistics are computed when first read, so whether it holds one is
    found out as its calls are built (:meth:`~inspector.model.Inspection.when_calls_built`); meanwhile the
    inputs are held, as the inspection's replay holds them."""
    try:
        if not when_read:
            _keep(run, insp, insp.first_nonfinite(), inputs)
            return
        insp.__dict__[_ATTR] = _WHEN_BUILT
        held = weakref.ref(insp)  # the inspection holds this hook: no cycle

        def built(calls: list[MethodCall]) -> None:
            found = held()
            if found is not None:
                try:
                    _keep(run, found, next((c for c in calls if c.nonfinite), None), inputs)
                except Exception:  # noqa: BLE001 - as above
                    found.__dict__.pop(_ATTR, None)

        insp.when_calls_built(built)
    except Exception:  # noqa: BLE001 - keeping the origin's inputs never fails a call
        return


def _keep(run: Any, insp: Inspection, call: MethodCall | None, inputs: CallInputs) -> None:
    """Keeps what re-running needs on ``insp`` and on ``call`` (its first non-finite call), if either
    ``call`` or the output holds a NaN or Inf; else nothing."""
    if call is None and not any(leaf.nonfinite for leaf in insp.outputs):
        insp.__dict__.pop(_ATTR, None)
        return
    runner = getattr(run, "runner", None)
    reason = None
    if runner is None or getattr(runner, "fn", None) is None or not getattr(runner, "intercepts", False):
        reason = "the origin of a NaN is found for flax.linen runs only"
    rerun = Rerun(runner, run.kind, *inputs.arguments(), call, reason)
    insp.__dict__[_ATTR] = rerun
    if call is not None:
        call.__dict__[_ATTR] = rerun


def _rerun(obj: Inspection | MethodCall) -> Rerun | None:
    """The :class:`Rerun` kept on ``obj``; for an inspection whose calls are still to be built, once built."""
    got = getattr(obj, "__dict__", {}).get(_ATTR)
    if isinstance(got, str) and isinstance(obj, Inspection):
        obj.calls  # noqa: B018 - building them finds out
        got = obj.__dict__.get(_ATTR)
    return got if isinstance(got, Rerun) else None


def origin_of(call: MethodCall) -> Origin | None:
    """:attr:`MethodCall.origin`: the origin of the NaN/Inf if ``call`` is its inspection's first non-finite
    call, else None."""
    rerun = _rerun(call)
    return rerun.origin() if rerun is not None else None


def nonfinite_origin(insp: Inspection) -> Origin | None:
    """:meth:`Inspection.nonfinite_origin`: where the first NaN/Inf was born, or None if the inspection holds
    none (or was not made by an inspected linen run)."""
    rerun = _rerun(insp)
    return rerun.origin() if rerun is not None else None


def available(obj: Inspection | MethodCall) -> bool:
    """True if an origin can be asked of ``obj`` (an inspection that found a NaN/Inf, or its first non-finite
    call), without computing it: a view can offer it, and compute it (a re-run, seconds on a large model) when
    asked."""
    return _rerun(obj) is not None


def computed(obj: Inspection | MethodCall) -> Origin | None:
    """The origin of ``obj`` if it was already computed (never re-runs anything), else None."""
    rerun = _rerun(obj)
    return rerun._origin if rerun is not None else None


__all__ = ["Origin", "Operand", "remember", "origin_of", "nonfinite_origin", "available", "computed"]
