"""Running flax under ``jax.jit``, compiled once per input signature.

:class:`Runner` wraps one of ``flax.linen.apply``/``init``/``init_with_output``.
Its cache key is what changes the trace: the structure of the inputs (with each dict's
key order), each array's shape/dtype/weak type/sharding, the Python values passed
alongside (``train=True``) by value and type (:func:`static_key`, never by identity),
and flax's ``return_frozendict`` flag. Non-array outputs (a string a method returned,
a module) are kept from the trace and put back, so they never break ``jit``; arrays
that a non-pytree object holds are computed and put back into a copy of it
(:func:`held_arrays`), so no tracer is ever returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax
import flax.linen as nn
import jax
from flax import configurations
from flax.core.scope import CollectionFilter

from inspector import failure, progress
from inspector._compat import (
    _current_trace, capture_calls, inside_transform, listening, unbound_method,
)
from inspector._tracebacks import entry_point, hide_frames
from inspector.capture import CaptureFilter, Filter, guarded, warn_unmatched
from inspector.engine.call_state import call_program, this_call
from inspector.engine.direct import DirectPath
from inspector.engine.hooks import CaptureAsker, TiedSummaries, TraceHooks
from inspector.engine.recorder import Recorder, noting_site, parse_call_key
from inspector.engine.results import (
    Carrier, RunResult, SignatureRecord, held_arrays, is_device_value, needs_reorder, order_skeleton, rebuild,
    restore_order, result_builder, staged,
)
from inspector.engine.signature import (
    NOT_PLAIN, FlatInputs, Statics, Unkeyable, UnsortableKeys, is_array, layout_guard, plain_skeleton,
    static_key, unsortable_keys,
)
from inspector.model import Kind
from inspector.names import format_path, safe

if TYPE_CHECKING:
    from flax import nnx


def fresh_containers(x: Any) -> Any:
    """``x`` with every plain dict, list and tuple copied (key order kept), leaves shared: a pass
    that writes into a container it was given leaves the next pass's containers as they were."""
    t = type(x)
    if t is dict:
        return {k: fresh_containers(v) for k, v in x.items()}
    if t is list:
        return [fresh_containers(v) for v in x]
    if t is tuple:
        return tuple(fresh_containers(v) for v in x)
    return x


@dataclasses.dataclass(eq=False)
class _Program:
    """One ``jax.jit`` per input structure; jax keys its executables by shape, dtype, weak
    type and sharding. ``signatures`` counts the executables it holds."""

    jitted: jax.stages.Wrapped
    make_body: Callable[[], Callable]
    signatures: int = 0
    used: int = 0
    plain: bool = False  # takes the inputs whole (jax arrays and None in dicts, lists and tuples)


FLAX_ENTRIES: dict[Kind, Callable] = {
    "apply": nn.apply, "init": nn.init, "init_with_output": nn.init_with_output,
}
"""flax's own ``apply``/``init``/``init_with_output``, taken at import: a runner always calls these, so
``flax.linen.apply`` may be routed to :func:`inspector.apply` (as ``make conformance`` does) without recursion."""
_flatten = jax.tree_util.tree_flatten
_RETURN_FROZENDICT = configurations.flax_return_frozendict  # flax's public flag holder: a read per direct call


def method_fn(module: nn.Module, method: str | Callable[..., Any] | None) -> Callable[..., Any]:
    """The function flax applies for ``module``'s ``method`` (a name, a function, or None: ``__call__``),
    as ``Module.apply(..., method=method)`` runs it."""
    if method is None:
        method = module.__call__
    if isinstance(method, str):
        name = method
        return getattr(type(module), name) if hasattr(type(module), name) else (
            lambda m, *a, **k: getattr(m, name)(*a, **k))
    return unbound_method(method)


DEFAULT_CACHE_SIZE = 64


class Runner:
    """One flax call (``kind``) of ``fn`` on ``module``, jitted and cached per signature.

    Called as flax's returned function is: ``runner(variables, *args, rngs=None, **kw)``
    for ``apply``, ``runner(rngs, *args, **kw)`` for the init forms. ``hooks``, if
    given (:class:`~inspector.engine.hooks.TraceHooks`), run inside the trace: on each captured value, and
    on flax's result, which they turn into ``(result, arrays alongside, trace-time record)``: the result to
    hand back, arrays to compute alongside (statistics) and what only the trace knew
    (``SignatureRecord.recorded``).

    A compiled program is chosen by the input structure (with each dict's key order),
    each array's shape/dtype/weak type/sharding, and every non-array input *by value
    and type* (:func:`static_key`). Inputs made only of jax arrays in plain dicts, lists
    and tuples go straight to one ``jax.jit`` per structure, whose dispatch checks the
    arrays. A non-array input that cannot be keyed by value (an unhashable object, a
    plain object whose attributes may change) is traced and compiled on every call and
    never cached, so a mutated config always gives flax's result. At most ``cache_size``
    compiled signatures are kept: past that the least recently used input structures
    are dropped whole (a structure alone over the limit starts afresh). Concurrent calls
    with one signature compile it once. Once a plain signature has run twice, calling the runner
    with it goes straight to its executable (:mod:`~inspector.engine.direct`) until a call does not fit.
    """

    intercepts = True
    """Whether the linen method calls inside :meth:`invoke` are intercepted and recorded (binding
    trace, sows, patches, the module an error was raised in). A runner of NNX modules turns it off,
    and has no linen ``fn``: it overrides :meth:`invoke`."""

    def __init__(self, kind: Kind, fn: Callable | None, module: nn.Module | nnx.Module, mutable: CollectionFilter,
                 capture_intermediates: CaptureFilter, hooks: TraceHooks | None = None,
                 patches: dict[str, Any] | None = None, cache_size: int = DEFAULT_CACHE_SIZE):
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size!r}")
        self.kind = kind
        self.fn = fn
        self.module = module
        self.mutable = mutable
        self.capture = capture_intermediates
        self.hooks = hooks
        self.cache_size = cache_size
        self.patches: dict[tuple[tuple[str, ...], str], dict[int | None, Any]] = {}
        for key, patch in (patches or {}).items():
            path, method, index = parse_call_key(key)
            self.patches.setdefault((path, method), {})[index] = patch
        self.traces = 0
        self.compiles = 0
        self._programs: dict[Any, _Program] = {}
        self._last: tuple[Callable[[Any, bool], bool], _Program] | None = None  # :func:`layout_guard` of the last call
        self.direct = DirectPath()
        self._clock = 0  # least recently used: the smallest ``_Program.used``
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """flax's call on these arguments, jitted; an error raised in it shows no inspector frame in
        its traceback (see :mod:`inspector._tracebacks`)."""
        try:
            direct = self.direct.current
            if direct is not None:
                try:
                    if direct.frozen is _RETURN_FROZENDICT.value and (
                            direct.order is None or direct.order(args, kwargs)):
                        out = direct.call(*args, **kwargs)
                        return out if direct.build is None else direct.build(out)
                except Exception:  # noqa: BLE001 - not the direct signature: the general path runs it, or raises
                    pass
                if not inside_transform():  # a call traced by the caller's transform says nothing of the next ones
                    self.direct.refused(direct)
            try:
                result, program = self._run(args, kwargs, None)
            except InsideTransform:
                # Called inside the caller's own transform (jit, grad, vmap): let it trace flax.
                return self._call_flax(args, kwargs, Recorder())
            except UnsortableKeys:
                return self.call_unjitted(args, kwargs)  # flax's own error, or its unjitted result
            if result.cached and self.direct.current is None:
                self.direct.make(program, program.plain and self.hooks is None, (args, kwargs), result.record)
            return result.result
        except Exception as e:
            failure.capture(self, args, kwargs, e)  # fi.last_failure(): only on this path, never on success
            hide_frames(e)
            raise

    def call_unjitted(self, args: tuple, kwargs: dict) -> Any:
        """flax's call as flax runs it, outside ``jax.jit`` (for inputs no program can take)."""
        return self._call_flax(args, kwargs, Recorder())

    @property
    def cached_signatures(self) -> int:
        """How many compiled signatures the runner holds (at most ``cache_size``)."""
        return sum(p.signatures for p in list(self._programs.values()))

    def run(self, args: tuple, kwargs: dict,
            on_phase: Callable[[str], None] | None = None) -> RunResult:
        """Runs the call; results may still be computing.
        ``on_phase`` is told ``'tracing'``, ``'compiling'`` and ``'running'`` as they start."""
        return self._run(args, kwargs, on_phase)[0]

    def _run(self, args: tuple, kwargs: dict,
             on_phase: Callable[[str], None] | None) -> tuple[RunResult, _Program]:
        if inside_transform():  # the program would be staged into the caller's trace, never run
            raise InsideTransform()
        try:
            program, inputs = self._program(args, kwargs)
            carrier, traced = call_program(program.jitted, inputs, on_phase)
        except ValueError as e:
            where = unsortable_keys((args, kwargs))
            if where is None:
                raise
            raise UnsortableKeys(where) from e
        if staged(carrier):  # concrete inputs, but inside the caller's own trace
            raise InsideTransform()
        record = carrier.record
        if traced is not None:
            record.compile_ms = (time.perf_counter() - traced) * 1000
            self.compiles += 1
            self._admit(program)
        self._clock += 1
        program.used = self._clock
        if on_phase is not None:
            on_phase("running")
        return RunResult(rebuild(record, carrier.arrays), carrier.alongside, record, traced is None), program

    @entry_point
    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """jax's ``Lowered`` form of the program a call with these inputs runs (``.as_text()``
        is its StableHLO, ``.compile().as_text()`` the optimized HLO)."""
        program, inputs = self._program(args, kwargs)
        lowered, traced = call_program(program.jitted.lower, inputs, None)
        if traced is not None:
            self._admit(program)
        return lowered

    @entry_point
    def prepare(self, *args: Any, **kwargs: Any) -> None:
        """Compiles the program a call with these inputs runs, without running it and without
        counting it in ``traces``: the next such call finds it ready (``cached``)."""
        self.prepare_unless(lambda: False, args, kwargs)

    def prepare_unless(self, stop: Callable[[], bool], args: tuple, kwargs: dict) -> None:
        """:meth:`prepare`, giving up before tracing or before compiling if ``stop()`` is true by then."""
        if stop():
            return
        program, inputs = self._program(args, kwargs)
        lowered, traced = call_program(program.jitted.lower, inputs, None, counted=False)
        if stop():
            return
        lowered.compile()
        self.compiles += 1
        if traced is not None:
            self._admit(program)

    def _program(self, args: tuple, kwargs: dict) -> tuple[_Program, Any]:
        """The program for these inputs and what to call it with. Raises
        :class:`InsideTransform` if an input is a tracer of an enclosing transform."""
        inputs = (args, kwargs)
        frozen = flax.config.flax_return_frozendict
        last = self._last
        if last is not None and last[0](inputs, frozen):  # the same containers as the last call
            return last[1], inputs
        skeleton = plain_skeleton(args)
        kw_skeleton = plain_skeleton(kwargs) if kwargs else None
        if skeleton is not NOT_PLAIN and kw_skeleton is not NOT_PLAIN:
            key: tuple[Any, ...] = (skeleton, kw_skeleton, frozen)
            program = self._programs.get(key)
            if program is None:
                whole = (skeleton, kw_skeleton or {})
                program = self._new_program(key, lambda: self._structured_body(whole), plain=True)
            guard = layout_guard(inputs, frozen)
            self._last = None if guard is None else (guard, program)
            return program, inputs
        leaves, treedef = _flatten((args, kwargs))
        dyn, statics, skey = self._split(leaves)
        order, n = order_skeleton((args, kwargs)), len(leaves)  # a kept program holds none of the arrays
        flat = FlatInputs(dyn, Statics(skey, statics))

        def make_body() -> Callable:
            return self._flat_body(treedef, order, n)

        if skey is None:  # not keyable by value: traced for this call only
            return _Program(jax.jit(make_body()), make_body), flat
        key = (treedef, order, skey, flax.config.flax_return_frozendict)
        program = self._programs.get(key)
        if program is None:
            program = self._new_program(key, make_body)
        return program, flat

    def _new_program(self, key: Any, make_body: Callable[[], Callable], plain: bool = False) -> _Program:
        with self._lock:
            program = self._programs.get(key)  # another thread may have made it
            if program is None:
                program = self._programs[key] = _Program(jax.jit(make_body()), make_body, plain=plain)
            return program

    def _admit(self, program: _Program) -> None:
        """Counts a new compiled signature of ``program``; past ``cache_size``, drops the least
        recently used other programs, then, if still over, starts ``program`` afresh (a new
        body, so nothing jax cached for the old one is reused or kept alive)."""
        with self._lock:
            program.signatures += 1
            direct = self.direct.current
            if direct is not None:  # its calls bypass :meth:`run`, which counts use
                direct.program.used = self._clock
            total = sum(p.signatures for p in self._programs.values())
            for key, other in sorted(self._programs.items(), key=lambda kv: kv[1].used):
                if total <= self.cache_size:
                    return
                if other is not program:
                    total -= other.signatures
                    del self._programs[key]
                    self._last = self.direct.current = None
            if total > self.cache_size:
                program.jitted, program.signatures = jax.jit(program.make_body()), 0
                self.direct.current = None

    def _split(self, leaves: list) -> tuple[list, list, Any]:
        """``(arrays, [(index, static)], statics key or None if unkeyable)``."""
        dyn, statics = [], []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, jax.core.Tracer):
                raise InsideTransform()
            if is_array(leaf):
                dyn.append(leaf)
            else:
                statics.append((i, leaf))
        try:
            skey: Any = tuple((i, static_key(v)) for i, v in statics)
        except Unkeyable:
            skey = None
        return dyn, statics, skey

    def _structured_body(self, skeleton: tuple[Any, Any]) -> Callable:
        """The traced function for inputs passed whole: jax sorted every dict, so put flax's
        key order back."""
        def body(inputs):
            args, kwargs = restore_order(inputs, skeleton)
            return self._trace(args, kwargs)
        return body

    def _flat_body(self, treedef: Any, order: Any, n: int) -> Callable:
        """The traced function for the arrays and the statics of the call being traced (not of the
        call that made the program: an equal set or config passed then may have changed since)."""
        def body(flat: FlatInputs):
            static_at = dict(flat.statics.values)
            it = iter(flat.arrays)
            full = [static_at[i] if i in static_at else next(it) for i in range(n)]
            args, kwargs = restore_order(jax.tree.unflatten(treedef, full), order)
            return self._trace(args, kwargs)
        return body

    def _trace(self, args: tuple, kwargs: dict) -> Carrier:
        """Runs flax inside the trace and records what only the trace knows. What the trace needs of
        the call (its concrete inputs, its phase callback) is this thread's
        :class:`~inspector.engine.call_state.CallState`."""
        call = this_call
        on_phase = call.on_phase
        if on_phase is None and not call.uncounted:  # a slow call says where it is
            status = call.status  # one per call, if jax traces twice
            if status is None:
                status = call.status = progress.start(type(self.module).__name__)
            on_phase = status.phase
        t0 = time.perf_counter()
        if on_phase is not None:
            on_phase("tracing")
        if not call.uncounted:
            self.traces += 1
        concrete = jax.tree.leaves(call.inputs)
        multi_device = any(len(getattr(getattr(x, "sharding", None), "device_set", ())) > 1 for x in concrete)
        record = SignatureRecord()
        hooks = self.hooks
        recorder = Recorder(detailed=hooks is not None, multi_device=multi_device)
        tied = TiedSummaries()
        at_capture = functools.partial(hooks.at_capture, tied=tied) if hooks is not None and hooks.ties_captures \
            else None
        own_args, own_kwargs = fresh_containers((args, kwargs))  # a model may write into a dict it is given
        result = self._call_flax(own_args, own_kwargs, recorder, at_capture)
        alongside = None
        if hooks is not None:
            result, alongside, record.recorded = hooks.after((args, kwargs), result, recorder, tied)
        out_leaves, record.out_tree = jax.tree.flatten(result, is_leaf=lambda x: x is None)
        record.build = result_builder(result, out_leaves)
        record.reorder = needs_reorder(result)
        if record.build is None:  # jax's unflatten, then flax's key order put back
            record.skeleton = order_skeleton(result)
        arrays = []
        for j, leaf in enumerate(out_leaves):
            if is_device_value(leaf):
                arrays.append(leaf)
                continue
            record.statics[j] = leaf
            held = held_arrays(leaf)
            if held:  # arrays inside a non-pytree object: computed, and put back into a copy
                record.objects[j] = ([p for p, _ in held], len(arrays))
                arrays.extend(a for _, a in held)
        t1 = time.perf_counter()
        record.trace_ms = (t1 - t0) * 1000
        call.traced = t1
        if on_phase is not None:
            on_phase("compiling")
        return Carrier(record, arrays, alongside)

    def _check_patches(self, recorder: Recorder) -> None:
        """A patch that matched no call is a typo: say so, listing calls that ran."""
        for (path, method), by_index in self.patches.items():
            for index in by_index:
                if (path, method, index) not in recorder.patched:
                    seen = ", ".join(f"{format_path(p)}:{m}" for p, m in list(recorder.seen)[:12])
                    where = f"{format_path(path)}:{method}" + (f"[{index}]" if index is not None else "")
                    raise KeyError(f"patch {where!r} matched no call; calls seen: {seen}")

    def _check_capture(self, recorder: Recorder) -> None:
        """A path, type or method filter that captured nothing is likely a typo: warn, naming the
        closest paths, types or methods that ran (once per filter and model)."""
        asked, recorder.asked = recorder.asked, {}
        if this_call.uncounted:  # compiled ahead (in the background): the call warned
            return
        if isinstance(self.capture, Filter) and asked and not recorder.captured:
            warn_unmatched(self.capture, [(module, key[1]) for key, module in asked.items()], self.module)

    def invoke(self, args: tuple, kwargs: dict, capture: CaptureFilter, recorder: Recorder) -> Any:
        """The flax call itself, run while ``recorder`` records: flax's ``apply``, ``init`` or
        ``init_with_output`` (``kind``) of ``fn`` on ``module``, with the capture filter
        ``capture`` (the runner's own, wrapped to tell the recorder of each capture). A runner
        of something other than a linen call (NNX) overrides this."""
        flax_fn = FLAX_ENTRIES[self.kind](self.fn, self.module, mutable=self.mutable, capture_intermediates=capture)
        return flax_fn(*args, **kwargs)

    def _call_flax(self, args, kwargs, recorder: Recorder, at_capture: Callable[[Any], Any] | None = None):
        """:meth:`invoke` under ``recorder``: interception, scope probes (``detailed``), patches checked
        afterwards, and an error noted with the module and method it was raised in. ``at_capture``
        (:meth:`~inspector.engine.hooks.TraceHooks.at_capture`) is applied to each value flax captures
        in this trace."""
        capture = self.capture
        if callable(capture):
            capture = noting_site(guarded(capture, recorder.on_capture, recorder.on_ask), recorder)
        elif capture is True:
            capture = noting_site(guarded(capture_calls, recorder.on_capture), recorder)
        if callable(capture) and at_capture is not None and self.intercepts:
            asker = CaptureAsker(capture, at_capture, top=_current_trace())
            capture, recorder.on_return = asker.given, asker.on_return
        recorder.patches = self.patches
        try:
            with contextlib.ExitStack() as recording:
                if self.intercepts:
                    if recorder.detailed:
                        recording.enter_context(listening(recorder.touch))
                    recording.enter_context(nn.intercept_methods(recorder.intercept))
                result = self.invoke(args, kwargs, capture, recorder)
            self._check_patches(recorder)
            self._check_capture(recorder)
            return result
        except Exception as e:
            site = recorder.error_site
            if site is not None:
                e.add_note(safe(f"inspector: raised in module {format_path(site.path)!r} ({site.module_type}), "
                                f"method {site.method!r}"))
            raise


class InsideTransform(Exception):
    """Inputs are tracers of an enclosing transform; no caching is possible."""
