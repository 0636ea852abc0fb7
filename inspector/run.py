"""Running flax under ``jax.jit``, compiled once per input signature.

:class:`Runner` wraps one of ``flax.linen.apply``/``init``/``init_with_output``.
Its cache key is what changes the trace: the structure of the inputs, each array's
shape/dtype/weak type/sharding, the Python values passed alongside (``train=True``),
and flax's ``return_frozendict`` flag. Non-array inputs are static; non-array
outputs (a string a method returned, a module) are kept from the trace and put back,
so they never break ``jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from inspector.capture import guarded
from inspector.model import BindingCall, path_str
from inspector.names import parse_key, safe

Kind = str  # 'apply' | 'init' | 'init_with_output'


def is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


# -- trace-time recording ------------------------------------------------------
@dataclasses.dataclass
class Event:
    """A value that landed in ``intermediates`` during the trace, in order."""

    kind: str  # 'capture' | 'sow'
    path: tuple[str, ...]
    name: str
    module_type: str


@dataclasses.dataclass
class Recorder:
    """What the interceptor and the capture filter saw while flax ran (trace time).

    With ``detailed``, it also records sow order and the binding trace: every
    wrapped call with the variables it read and wrote and the RNG streams it drew.
    """

    detailed: bool = False
    events: list[Event] = dataclasses.field(default_factory=list)
    stack: list[tuple[tuple[str, ...], str, str, int]] = dataclasses.field(default_factory=list)
    captured: dict[tuple[tuple[str, ...], str], int] = dataclasses.field(default_factory=dict)
    sowed: dict[tuple[tuple[str, ...], str], int] = dataclasses.field(default_factory=dict)
    binding: list[BindingCall] = dataclasses.field(default_factory=list)
    lifted: set[str] = dataclasses.field(default_factory=set)  # e.g. 'ScanCell'
    multi_device: bool = False  # some input is sharded over several devices
    patches: dict[tuple[tuple[str, ...], str], dict[int | None, Any]] = dataclasses.field(default_factory=dict)
    seen: dict[tuple[tuple[str, ...], str], int] = dataclasses.field(default_factory=dict)
    patched: set[tuple[tuple[str, ...], str, int | None]] = dataclasses.field(default_factory=set)
    error_site: tuple[tuple[str, ...], str, str] | None = None
    shape_passes: set[tuple[str, ...]] = dataclasses.field(default_factory=set)  # paths traced an extra time
    shadow: dict[tuple[tuple[str, ...], str], int] = dataclasses.field(default_factory=dict)

    def on_capture(self, module: Any, method_name: str) -> None:
        if shape_pass():
            return
        key = (tuple(module.path), method_name)
        self.captured[key] = self.captured.get(key, 0) + 1
        self.events.append(Event("capture", key[0], method_name, type(module).__name__))

    def touch(self, kind: str, scope_path: tuple[str, ...], col: str, name: str) -> None:
        """A variable read/write or an RNG draw, charged to the innermost call."""
        if not self.stack or self.stack[-1][3] is None or col == "intermediates" and kind != "rng":
            return
        call = self.binding[self.stack[-1][3]]
        if kind == "rng":
            call.rngs[name] = call.rngs.get(name, 0) + 1
            return
        label = name if tuple(scope_path) == call.path else f"{'/'.join(scope_path)}:{name}"
        names = (call.reads if kind == "read" else call.writes).setdefault(col, [])
        if label not in names:
            names.append(label)

    def intercept(self, next_fun, args, kwargs, context):
        module, name = context.module, context.method_name
        if name == "<lambda>":  # a lifted transform's throw-away shape check of its wrapper class
            self.lifted.add(type(module).__name__)
            return next_fun(*args, **kwargs)
        if name == "setup" or module.scope is None:
            return next_fun(*args, **kwargs)
        path = tuple(module.path)
        site = (path, type(module).__name__, name)
        if shape_pass():
            return self._shape_call(site, next_fun, args, kwargs)
        self.shadow.clear()
        index = len(self.binding)
        if self.detailed:
            for key, n in self._counts(module, path).items():
                self.sowed.setdefault((path, key), n)  # values passed in, not sown by this run
            parent = self.stack[-1][3] if self.stack else None
            self.binding.append(BindingCall(index, parent, len(self.stack), path, type(module).__name__, name,
                                            traced=2 if path in self.shape_passes else 1))
        self.stack.append(site + (index,))
        try:
            y = next_fun(*args, **kwargs)
        except BaseException:
            if self.error_site is None:
                self.error_site = site
            raise
        finally:
            self.stack.pop()
        call_index = self.seen.get((path, name), 0)
        self.seen[(path, name)] = call_index + 1
        y = self._patch(path, name, call_index, y)
        if self.detailed:
            for key, n in self._counts(module, path).items():
                for _ in range(n - self.sowed.get((path, key), 0)):
                    self.events.append(Event("sow", path, key, site[1]))
                self.sowed[(path, key)] = n
        return y

    def _shape_call(self, site, next_fun, args, kwargs):
        """A call during a lifted transform's structure-only pass: not part of the binding trace or
        the capture order, but patched like the call it stands for (same call index)."""
        path, _, name = site
        self.shape_passes.add(path)
        key = (path, name)
        call_index = self.seen.get(key, 0) + self.shadow.get(key, 0)
        self.shadow[key] = self.shadow.get(key, 0) + 1
        self.stack.append(site + (None,))
        try:
            y = next_fun(*args, **kwargs)
        finally:
            self.stack.pop()
        return self._patch(path, name, call_index, y)

    def _patch(self, path: tuple[str, ...], name: str, call_index: int, y: Any) -> Any:
        by_index = self.patches.get((path, name))
        if by_index is not None:
            for index in (call_index, None):
                if index in by_index:
                    self.patched.add((path, name, index))
                    return apply_patch(by_index[index], y)
        return y

    def _counts(self, module: Any, path: tuple[str, ...]) -> dict[str, int]:
        """Per name: values in this module's own ``intermediates`` not put there by capture."""
        try:
            col = module.scope._collection("intermediates")  # flax-internal, read only
        except Exception:  # noqa: BLE001 - collection absent or not readable
            return {}
        out = {}
        for k, v in col.items():
            if isinstance(v, Mapping):
                continue
            n = len(v) if isinstance(v, tuple) else 1
            out[k] = n - self.captured.get((path, k), 0)
        return out


_local = threading.local()


def shape_pass() -> bool:
    """True while a lifted transform traces a body only to learn the structure of its outputs
    (flax's ``nn.scan`` does, with a partial-evaluation trace, before tracing the loop that runs)."""
    try:
        from jax._src import core  # internal: the innermost active trace

        return type(core.trace_ctx.trace).__name__ == "JaxprTrace"
    except Exception:  # noqa: BLE001 - a jax without it: every pass is recorded
        return False


def parse_call_key(key: str) -> tuple[tuple[str, ...], str, int | None]:
    """``'encoder/Dense_0:__call__[1]'`` -> ``(('encoder', 'Dense_0'), '__call__', 1)``
    (the key grammar of :mod:`inspector.names`)."""
    path, method, index = parse_key(key)
    if method is None:
        raise ValueError(f"patch key {key!r} is not of the form 'module/path:method' or 'path:method[i]'")
    return path, method, index


def apply_patch(patch: Any, y: Any) -> Any:
    """``patch(y)`` for a callable, else ``patch`` broadcast to every array leaf of ``y``."""
    if callable(patch):
        return patch(y)
    return jax.tree.map(lambda leaf: jnp.broadcast_to(jnp.asarray(patch, leaf.dtype), leaf.shape), y)


def _install_scope_probes() -> None:
    """Reports variable reads/writes and RNG draws to the recorder active on this
    thread (none outside an inspected trace, where the probes only pass through)."""
    from flax.core.scope import Scope

    if getattr(Scope, "_inspector_probes", False):
        return
    get_variable, put_variable, make_rng = Scope.get_variable, Scope.put_variable, Scope.make_rng

    def probed_get(self, col, name, default=None):
        rec = getattr(_local, "recorder", None)
        if rec is not None:
            rec.touch("read", self.path, col, name)
        return get_variable(self, col, name, default)

    def probed_put(self, col, name, value):
        rec = getattr(_local, "recorder", None)
        if rec is not None:
            rec.touch("write", self.path, col, name)
        return put_variable(self, col, name, value)

    def probed_rng(self, name="params"):
        rec = getattr(_local, "recorder", None)
        if rec is not None:
            stream = name if self.has_rng(name) or not self.has_rng("params") else f"{name}->params"
            rec.touch("rng", self.path, "", stream)
        return make_rng(self, name)

    for probe, orig in ((probed_get, get_variable), (probed_put, put_variable), (probed_rng, make_rng)):
        functools.update_wrapper(probe, orig)
    Scope.get_variable, Scope.put_variable, Scope.make_rng = probed_get, probed_put, probed_rng
    Scope._inspector_probes = True


def _order_skeleton(x: Any) -> Any:
    """Key order of every mapping in ``x``, hashable (jit sorts dict keys; flax does not)."""
    if isinstance(x, (dict, FrozenDict)):
        return tuple((k, _order_skeleton(v)) for k, v in x.items())
    if isinstance(x, (tuple, list)):
        return tuple(_order_skeleton(v) for v in x)
    return None


def _reorder(x: Any, skel: Any) -> Any:
    if skel is None:
        return x
    if isinstance(x, FrozenDict):
        return FrozenDict({k: _reorder(x[k], s) for k, s in skel})
    if isinstance(x, dict):
        return type(x)((k, _reorder(x[k], s)) for k, s in skel) if type(x) is dict else x
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return tuple(_reorder(v, s) for v, s in zip(x, skel))
    if isinstance(x, list):
        return [_reorder(v, s) for v, s in zip(x, skel)]
    return x


# -- the runner ----------------------------------------------------------------
@dataclasses.dataclass
class Traced:
    """One compiled signature: the executable and what only the trace knew."""

    compiled: Any
    out_tree: Any = None
    statics: dict[int, Any] = dataclasses.field(default_factory=dict)
    skeleton: Any = None
    extra: Any = None  # what a ``post`` hook recorded at trace time
    trace_ms: float = 0.0
    compile_ms: float = 0.0


FLAX_ENTRIES: dict[Kind, Callable] = {
    "apply": nn.apply, "init": nn.init, "init_with_output": nn.init_with_output,
}
"""flax's own ``apply``/``init``/``init_with_output``, taken at import: a runner always calls these, so
``flax.linen.apply`` may be routed to :func:`inspector.apply` (as ``make conformance`` does) without recursion."""


class Runner:
    """One flax call (``kind``) of ``fn`` on ``module``, jitted and cached per signature.

    Called as flax's returned function is: ``runner(variables, *args, rngs=None, **kw)``
    for ``apply``, ``runner(rngs, *args, **kw)`` for the init forms. ``post``, if
    given, runs inside the trace on ``(inputs, result, recorder)`` and returns
    ``(result, extra arrays, trace-time record)``: the result to hand back, arrays to
    compute alongside (statistics) and what only the trace knew (``Traced.extra``).
    """

    def __init__(self, kind: Kind, fn: Callable, module: nn.Module, mutable: Any,
                 capture_intermediates: Any, post: Callable | None = None,
                 patches: dict[str, Any] | None = None):
        self.kind = kind
        self.fn = fn
        self.module = module
        self.mutable = mutable
        self.capture = capture_intermediates
        self.post = post
        self.patches: dict[tuple[tuple[str, ...], str], dict[int | None, Any]] = {}
        for key, patch in (patches or {}).items():
            path, method, index = parse_call_key(key)
            self.patches.setdefault((path, method), {})[index] = patch
        self.traces = 0
        self.compiles = 0
        self._cache: dict[Any, Traced] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.run(args, kwargs)[0]
        except _Traced:
            # Called inside the caller's own transform (jit, grad, vmap): let it trace flax.
            return self._call_flax(args, kwargs, Recorder())

    # Inputs are split into arrays (traced) and everything else (static, in the key).
    def run(self, args: tuple, kwargs: dict,
            on_phase: Callable[[str], None] | None = None) -> tuple[Any, Any, Traced, bool]:
        """``(result, extra, traced entry, cached)``; results may still be computing.
        ``on_phase`` is told ``'tracing'``, ``'compiling'`` and ``'running'`` as they start."""
        on_phase = on_phase or (lambda phase: None)
        leaves, treedef = jax.tree.flatten((args, kwargs), is_leaf=lambda x: x is None)
        dyn, statics, sig = [], [], []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, jax.core.Tracer):
                raise _Traced()
            if is_array(leaf):
                dyn.append(leaf)
                sig.append((np.shape(leaf), str(leaf.dtype), bool(getattr(leaf, "weak_type", False)),
                            getattr(leaf, "sharding", None) if isinstance(leaf, jax.Array) else None))
            else:
                statics.append((i, leaf))
        order = _order_skeleton((args, kwargs))
        key = (treedef, order, tuple(sig), _hashable(statics), bool(flax.config.flax_return_frozendict))
        entry = self._cache.get(key)
        if entry is None:
            entry = self._compile(dyn, treedef, order, leaves, statics, on_phase)
            self._cache[key] = entry
            cached = False
        else:
            cached = True
        on_phase("running")
        result_flat, extra = entry.compiled(dyn)
        return _unflatten(entry, result_flat), extra, entry, cached

    def _compile(self, dyn, treedef, order, leaves, statics, on_phase) -> Traced:
        entry = Traced(compiled=None)
        static_at = dict(statics)
        multi_device = any(len(getattr(getattr(x, "sharding", None), "device_set", ())) > 1 for x in dyn)
        n = len(leaves)

        def body(dyn_leaves):
            self.traces += 1
            it = iter(dyn_leaves)
            full = [static_at[i] if i in static_at else next(it) for i in range(n)]
            args, kwargs = _reorder(jax.tree.unflatten(treedef, full), order)
            recorder = Recorder(detailed=self.post is not None, multi_device=multi_device)
            result = self._call_flax(args, kwargs, recorder)
            extra = None
            if self.post is not None:
                result, extra, entry.extra = self.post((args, kwargs), result, recorder)
            entry.skeleton = _order_skeleton(result)
            out_leaves, entry.out_tree = jax.tree.flatten(result, is_leaf=lambda x: x is None)
            arrays = []
            entry.statics = {}
            for j, leaf in enumerate(out_leaves):
                if isinstance(leaf, (jax.Array, jax.core.Tracer)):
                    arrays.append(leaf)
                else:
                    entry.statics[j] = leaf
            return arrays, extra

        on_phase("tracing")
        t0 = time.perf_counter()
        lowered = jax.jit(body).lower(dyn)
        t1 = time.perf_counter()
        on_phase("compiling")
        entry.compiled = lowered.compile()
        t2 = time.perf_counter()
        self.compiles += 1
        entry.trace_ms, entry.compile_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
        return entry

    def _check_patches(self, recorder: Recorder) -> None:
        """A patch that matched no call is a typo: say so, listing calls that ran."""
        for (path, method), by_index in self.patches.items():
            for index in by_index:
                if (path, method, index) not in recorder.patched:
                    seen = ", ".join(f"{path_str(p)}:{m}" for p, m in list(recorder.seen)[:12])
                    where = f"{path_str(path)}:{method}" + (f"[{index}]" if index is not None else "")
                    raise KeyError(f"patch {where!r} matched no call; calls seen: {seen}")

    def _call_flax(self, args, kwargs, recorder: Recorder):
        capture = self.capture
        if callable(capture):
            capture = guarded(capture, recorder.on_capture)
        elif capture is True:
            capture = guarded(nn.module.capture_call_intermediates, recorder.on_capture)
        flax_fn = FLAX_ENTRIES[self.kind](self.fn, self.module, mutable=self.mutable,
                                          capture_intermediates=capture)
        recorder.patches = self.patches
        if recorder.detailed:
            _install_scope_probes()
            _local.recorder = recorder
        try:
            with nn.intercept_methods(recorder.intercept):
                result = flax_fn(*args, **kwargs)
            self._check_patches(recorder)
            return result
        except Exception as e:  # noqa: BLE001 - re-raised unchanged, with a note
            if recorder.error_site is not None:
                path, type_name, method = recorder.error_site
                where = "/".join(path) or "<root>"
                e.add_note(safe(f"inspector: raised in module {where!r} ({type_name}), method {method!r}"))
            raise
        finally:
            _local.recorder = None


class _Traced(Exception):
    """Inputs are tracers of an enclosing transform; no caching is possible."""


def _hashable(statics: list) -> tuple:
    out = []
    for i, v in statics:
        try:
            hash(v)
            out.append((i, v))
        except TypeError:
            out.append((i, ("<id>", id(v))))
    return tuple(out)


def _unflatten(entry: Traced, arrays: list) -> Any:
    it = iter(arrays)
    n = entry.out_tree.num_leaves
    full = [entry.statics[j] if j in entry.statics else next(it) for j in range(n)]
    return _reorder(jax.tree.unflatten(entry.out_tree, full), entry.skeleton)
