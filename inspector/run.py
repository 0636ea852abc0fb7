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
import copy
import dataclasses
import enum
import functools
import itertools
import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict
from flax.core.scope import CollectionFilter

from inspector._compat import (
    TouchKind, _current_trace, capture_calls, capture_filter_in_effect, direct_call, flax_flags, inside_transform,
    is_lifted_wrapper_call, listening, own_intermediates, shape_pass,
)
from inspector import failure, progress
from inspector._tracebacks import entry_point, hide_frames
from inspector.capture import (
    CaptureFilter, CaptureFilterError, Filter, guarded, public_method, recorded_call, warn_unmatched,
)
from inspector.model import BindingCall, Kind, path_str
from inspector.names import Path, format_path, parse_key, safe

if TYPE_CHECKING:
    from flax import nnx

EventKind = Literal["capture", "sow"]


def is_array(x: Any) -> bool:
    """True for a jax array, and for a numpy array or scalar of a dtype jax takes (a string,
    date or object array is passed to flax as it is, as a static value)."""
    if isinstance(x, jax.Array):
        return True
    return isinstance(x, (np.ndarray, np.generic)) and _jax_dtype(x.dtype)


@functools.cache
def _jax_dtype(dtype: np.dtype) -> bool:
    if dtype.kind in "OUSMm":
        return False
    try:
        jax.dtypes.canonicalize_dtype(dtype)
    except TypeError:
        return False
    return True


# -- trace-time recording ------------------------------------------------------
@dataclasses.dataclass
class Event:
    """A value that landed in ``intermediates`` during the trace, in order."""

    kind: EventKind
    path: Path
    name: str
    module_type: str


@dataclasses.dataclass(frozen=True)
class Frame:
    """One wrapped method running (innermost last on :attr:`Recorder.stack`), or where one raised.

    ``binding_index`` is the position of its :class:`~inspector.model.BindingCall`, the call that
    variable accesses are charged to. It is None for a call that is not in the binding trace: a
    lifted transform's structure-only pass, and a running ``setup`` (``in_setup``), whose accesses
    wait for the module's next call.
    """

    path: Path
    module_type: str
    method: str
    binding_index: int | None = None
    in_setup: bool = False


@dataclasses.dataclass(frozen=True)
class Touch:
    """A variable read or write, or an RNG draw (``col`` is ``''``, ``name`` the stream), made while
    a ``setup`` ran; ``enclosing`` is the call it goes to if its module is never called."""

    kind: TouchKind
    scope_path: Path
    col: str
    name: str
    enclosing: int | None


@dataclasses.dataclass
class Recorder:
    """What the interceptor and the capture filter saw while flax ran (trace time).

    With ``detailed``, it also records sow order and the binding trace: every
    wrapped call with the variables it read and wrote and the RNG streams it drew.
    """

    detailed: bool = False
    events: list[Event] = dataclasses.field(default_factory=list)
    stack: list[Frame] = dataclasses.field(default_factory=list)
    captured: dict[tuple[Path, str], int] = dataclasses.field(default_factory=dict)
    sowed: dict[tuple[Path, str], int] = dataclasses.field(default_factory=dict)
    binding: list[BindingCall] = dataclasses.field(default_factory=list)
    lifted: dict[Path, type] = dataclasses.field(default_factory=dict)  # ('scan',) -> ScanCell: run by a transform
    multi_device: bool = False  # some input is sharded over several devices
    patches: dict[tuple[Path, str], dict[int | None, Any]] = dataclasses.field(default_factory=dict)
    seen: dict[tuple[Path, str], int] = dataclasses.field(default_factory=dict)
    patched: set[tuple[Path, str, int | None]] = dataclasses.field(default_factory=set)
    error_site: Frame | None = None
    shape_passes: set[Path] = dataclasses.field(default_factory=set)  # paths traced an extra time
    shadow: dict[tuple[Path, str], int] = dataclasses.field(default_factory=dict)
    pending: dict[Path, list[Touch]] = dataclasses.field(default_factory=dict)  # touched in setup
    at_capture: Callable[[Any, Recorder], Any] | None = None  # applied to a value where it is captured
    top: Any = None  # the runner's own trace: values of inner traces (nn.scan, remat) are left alone
    early: dict[int, tuple[Any, Any]] = dataclasses.field(default_factory=dict)  # at_capture's, by id
    _ask: Callable | None = None  # the capture filter as flax was given it (:meth:`asking`)
    _filter: Callable | None = None  # the filter it answers with
    _decided: tuple[Any, str, bool] | None = None  # the interceptor's answer for the call returning now
    asked: dict[tuple[Path, str], Any] = dataclasses.field(default_factory=dict)  # the filter was asked: module

    def asking(self, filter_fn: Callable[[Any, str], bool]) -> Callable[[Any, str], bool]:
        """``filter_fn`` as flax is to be given it when :attr:`at_capture` is set: flax asks it
        right after a wrapped method returns, and where the interceptor has already asked (to
        apply :attr:`at_capture` to the value it returns) flax is given that answer, so a user's
        filter is still asked once per call."""
        def ask(module: Any, method_name: str) -> bool:
            decided = self._decided
            if decided is not None and decided[0] is module and decided[1] == method_name:
                self._decided = None
                return decided[2]
            return filter_fn(module, method_name)

        self._ask, self._filter = ask, filter_fn
        return ask

    def _captured_here(self, module: Any, name: str, y: Any) -> Any:
        """``y``, or :attr:`at_capture` of it if flax is about to capture it in the runner's own trace."""
        if self._filter is None or _current_trace() is not self.top or capture_filter_in_effect() is not self._ask:
            return y
        captured = self._filter(module, name)
        self._decided = (module, name, captured)
        return self.at_capture(y, self) if captured and self.at_capture is not None else y

    def on_ask(self, module: Any, method_name: str) -> None:
        """The capture filter is asked about ``module.method_name`` (bound, public calls only): kept
        to say what ran if the filter captures nothing (:func:`~inspector.capture.warn_unmatched`)."""
        if not (recorded_call(module, method_name) and public_method(method_name)):
            return
        self.asked.setdefault((tuple(module.path), method_name), module)

    def on_capture(self, module: Any, method_name: str) -> None:
        if shape_pass() or getattr(module, "scope", None) is None:
            return  # an unbound module: flax's own sow raises its own error
        key = (tuple(module.path), method_name)
        self.captured[key] = self.captured.get(key, 0) + 1
        self.events.append(Event("capture", key[0], method_name, type(module).__name__))

    def _enclosing(self) -> int | None:
        """The binding index of the innermost running call that is in the binding trace."""
        return next((f.binding_index for f in reversed(self.stack) if f.binding_index is not None), None)

    def touch(self, kind: TouchKind, scope_path: Path, col: str, name: str) -> None:
        """A variable read/write or an RNG draw, charged to the innermost call. One made while a
        module's ``setup`` runs is charged to that module's next call (flax runs ``setup`` lazily,
        just before it), or to the enclosing call if the module is never called."""
        if col == "intermediates" and kind != "rng":
            return
        if not self.stack:
            return
        top = self.stack[-1]
        if top.in_setup:
            self.pending.setdefault(top.path, []).append(
                Touch(kind, tuple(scope_path), col, name, self._enclosing()))
            return
        if top.binding_index is not None:
            self._charge(top.binding_index, kind, tuple(scope_path), col, name)

    def _charge(self, index: int, kind: TouchKind, scope_path: Path, col: str, name: str) -> None:
        call = self.binding[index]
        if kind == "rng":
            call.rngs[name] = call.rngs.get(name, 0) + 1
            return
        label = name if scope_path == call.path else f"{'/'.join(scope_path)}:{name}"
        names = (call.reads if kind == "read" else call.writes).setdefault(col, [])
        if label not in names:
            names.append(label)

    def _setup_call(self, module: Any, next_fun, args, kwargs):
        """``setup`` is not a call of its own in the trace: what it touches is held for the module."""
        self.stack.append(Frame(tuple(module.path), type(module).__name__, "setup", in_setup=True))
        try:
            return next_fun(*args, **kwargs)
        finally:
            self.stack.pop()

    def _claim(self, path: Path, index: int) -> None:
        for t in self.pending.pop(path, ()):
            self._charge(index, t.kind, t.scope_path, t.col, t.name)

    def _release(self, index: int) -> None:
        """Touches of setups whose module was never called go to the call they ran in."""
        for owner in list(self.pending):
            keep = []
            for t in self.pending[owner]:
                if t.enclosing == index:
                    self._charge(index, t.kind, t.scope_path, t.col, t.name)
                else:
                    keep.append(t)
            if keep:
                self.pending[owner] = keep
            else:
                del self.pending[owner]

    def intercept(self, next_fun: Callable[..., Any], args: tuple, kwargs: dict, context: Any) -> Any:
        """Runs one wrapped module method for :func:`flax.linen.intercept_methods` and records it.

        flax calls this around every wrapped method call of a module (``next_fun`` runs the
        method). What is recorded depends on the call:

        * a lifted transform's call of its wrapper class (method ``'<lambda>'``): only the class
          name is kept, to explain intermediates the transform drops (:func:`dropped_notes`);
        * ``setup`` of a bound module (``detailed`` only): run under a setup :class:`Frame`, so
          what it touches waits for the module's next call (flax runs ``setup`` lazily, just
          before that call); ``setup`` otherwise, and unbound modules, pass through;
        * a call during a lifted transform's structure-only pass (:func:`shape_pass`): see
          :meth:`_shape_call`;
        * any other call is the user's call. With ``detailed``, the module's own
          ``intermediates`` counts before the call are taken as given (values passed in, not
          sown by this call); a :class:`~inspector.model.BindingCall` is appended, whose parent
          is the innermost enclosing recorded call, and it claims what its ``setup`` touched.
          While the method runs its frame is on :attr:`stack`, and the first exception is
          charged to it (:attr:`error_site`). Afterwards, touches of setups whose module was
          never called are charged to it; its call index (the number of earlier calls of the
          same path and method) selects a patch; and each value its module's ``intermediates``
          gained beyond what the capture filter put there is recorded as a sow :class:`Event`.

        Args:
          next_fun: runs the wrapped method.
          args: positional arguments passed to ``next_fun``.
          kwargs: keyword arguments passed to ``next_fun``.
          context: flax's interceptor context (``module``, ``method_name``).

        Returns:
          What the method returned, or what a matching patch made of it.
        """
        module, name = context.module, context.method_name
        if is_lifted_wrapper_call(name):
            self._lifted_call(module)
            return next_fun(*args, **kwargs)
        if name == "setup" and self.detailed and module.scope is not None and not shape_pass():
            return self._setup_call(module, next_fun, args, kwargs)
        if name == "setup" or module.scope is None:
            return next_fun(*args, **kwargs)
        path = tuple(module.path)
        module_type = type(module).__name__
        if shape_pass():
            return self._shape_call(path, module_type, name, next_fun, args, kwargs)
        self.shadow.clear()
        index = len(self.binding)
        if self.detailed:
            for key, n in self._counts(module, path).items():
                self.sowed.setdefault((path, key), n)  # values passed in, not sown by this run
            self.binding.append(BindingCall(index, self._enclosing(), len(self.stack), path, module_type, name,
                                            traced=2 if path in self.shape_passes else 1))
            self._claim(path, index)
        frame = Frame(path, module_type, name, index)
        self.stack.append(frame)
        try:
            y = next_fun(*args, **kwargs)
        except BaseException:
            if self.error_site is None:
                self.error_site = frame
            raise
        finally:
            self.stack.pop()
            if self.detailed and self.pending:
                self._release(index)
        call_index = self.seen.get((path, name), 0)
        self.seen[(path, name)] = call_index + 1
        y = self._patch(path, name, call_index, y)
        if self.detailed:
            for key, n in self._counts(module, path).items():
                for _ in range(n - self.sowed.get((path, key), 0)):
                    self.events.append(Event("sow", path, key, module_type))
                self.sowed[(path, key)] = n
        return self._captured_here(module, name, y)

    def _lifted_call(self, wrapper: Any) -> None:
        """A lifted transform's call of its wrapper instance (a ``ScanCell`` for ``nn.scan(Cell)``): its
        scope is the parent's, and the module it runs is the parent's child of the same name."""
        scope, name = getattr(wrapper, "scope", None), getattr(wrapper, "name", None)
        if scope is not None and isinstance(name, str):
            self.lifted.setdefault(tuple(scope.path) + (name,), type(wrapper))

    def _shape_call(self, path: Path, module_type: str, name: str, next_fun, args, kwargs):
        """A call during a lifted transform's structure-only pass: not part of the binding trace or
        the capture order, but patched like the call it stands for.

        The pass runs before the loop it describes, so its calls come before the real ones in
        :attr:`seen`. The shadow count numbers them from the current real count: the i-th call
        of a path and method in the pass gets the index the i-th real call will get, and the
        count restarts at every real call, where the pass is over."""
        self.shape_passes.add(path)
        key = (path, name)
        call_index = self.seen.get(key, 0) + self.shadow.get(key, 0)
        self.shadow[key] = self.shadow.get(key, 0) + 1
        self.stack.append(Frame(path, module_type, name))
        try:
            y = next_fun(*args, **kwargs)
        finally:
            self.stack.pop()
        return self._patch(path, name, call_index, y)

    def _patch(self, path: Path, name: str, call_index: int, y: Any) -> Any:
        by_index = self.patches.get((path, name))
        if by_index is not None:
            for index in (call_index, None):
                if index in by_index:
                    self.patched.add((path, name, index))
                    return apply_patch(by_index[index], y)
        return y

    def _counts(self, module: Any, path: Path) -> dict[str, int]:
        """Per name: values in this module's own ``intermediates`` not put there by capture."""
        out = {}
        for k, v in own_intermediates(module.scope).items():
            if isinstance(v, Mapping):
                continue
            n = len(v) if isinstance(v, tuple) else 1
            out[k] = n - self.captured.get((path, k), 0)
        return out


def parse_call_key(key: str) -> tuple[Path, str, int | None]:
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


def _order_skeleton(x: Any) -> Any:
    """Key order of every mapping in ``x``, in the form :func:`_reorder` reads."""
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
    if isinstance(x, tuple):
        kids = (_reorder(v, s) for v, s in zip(x, skel))
        return type(x)(*kids) if hasattr(x, "_fields") else tuple(kids)  # a namedtuple, or a plain tuple
    if isinstance(x, list):
        return [_reorder(v, s) for v, s in zip(x, skel)]
    return x


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


def _needs_reorder(x: Any) -> bool:
    """True if some mapping in ``x`` is not in sorted key order (jax's unflatten sorts them)."""
    if isinstance(x, (dict, FrozenDict)):
        keys = list(x)
        try:
            unsorted = keys != sorted(keys)
        except TypeError:
            unsorted = True
        return unsorted or any(_needs_reorder(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return any(_needs_reorder(v) for v in x)
    return False


_BUILD_LIMIT = 20_000  # leaves; past it, jax's unflatten and a reorder


def _builder(result: Any, leaves: list) -> Callable[[list], Any] | None:
    """A function of ``leaves`` (``result``'s, in jax's flatten order) that rebuilds ``result``
    with flax's key order in one generated expression, instead of jax's unflatten (which sorts
    every dict) and a reorder. Any other pytree node (a namedtuple, a ``flax.struct`` dataclass)
    is rebuilt from its children by its own one-level treedef. None if ``result`` is too large or
    deep for one expression."""
    if len(leaves) > _BUILD_LIMIT:
        return None
    at = {id(leaf): i for i, leaf in enumerate(leaves)}
    keys: list[Any] = []
    nodes: list[Callable[[list], Any]] = []

    def exprs(xs: Any, depth: int) -> list[str] | None:
        out = []
        for v in xs:
            e = expr(v, depth + 1)
            if e is None:
                return None
            out.append(e)
        return out

    def expr(x: Any, depth: int) -> str | None:
        t = type(x)
        if depth > 64:
            return None
        if t is dict or t is FrozenDict:
            values = exprs(x.values(), depth)
            if values is None:
                return None
            items = []
            for k, e in zip(x, values):
                keys.append(k)
                items.append(f"K[{len(keys) - 1}]: {e}")
            body = "{" + ", ".join(items) + "}"
            return f"F({body})" if t is FrozenDict else body
        if t is tuple or t is list:
            parts = exprs(x, depth)
            if parts is None:
                return None
            return ("(" + "".join(f"{e}, " for e in parts) + ")") if t is tuple else "[" + ", ".join(parts) + "]"
        if id(x) in at:
            return f"L[{at[id(x)]}]"
        kids, node = jax.tree_util.tree_flatten(x, is_leaf=lambda y: y is not x)  # one level down
        if jax.tree_util.treedef_is_leaf(node):
            return None
        parts = exprs(kids, depth)
        if parts is None:
            return None
        nodes.append(functools.partial(jax.tree_util.tree_unflatten, node))
        return f"U[{len(nodes) - 1}]([{', '.join(parts)}])"

    body = expr(result, 0)
    if body is None:
        return None
    # keys and nodes are in K and U: no user text in the code
    return eval(f"lambda L: {body}", {"K": tuple(keys), "F": FrozenDict, "U": tuple(nodes)})


# -- static arguments: keyed by value and type, never by identity ----------------
class Unkeyable(Exception):
    """A static argument that cannot be keyed by value (see :func:`static_key`)."""


_EXACT = frozenset((bool, int, str, bytes, type(None), type(Ellipsis), range, slice))
_BY_IDENTITY = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType,
                types.MethodDescriptorType, types.WrapperDescriptorType)


def static_key(v: Any, depth: int = 0) -> Any:
    """A hashable key equal for equal static values of the same type, recursively.

    ``1``, ``1.0`` and ``True`` are distinct; floats are keyed by ``repr`` (a NaN equals
    itself, ``-0.0`` differs from ``0.0``); containers and dataclasses by value; enums,
    functions, classes and modules by identity (the key holds them, so an identity
    cannot be reused). Types that define both ``__eq__`` and ``__hash__`` are trusted to
    compare by value. Anything else (an unhashable object, or a plain object with
    attributes that may change) raises :class:`Unkeyable`.
    """
    t = type(v)
    if t in _EXACT:
        return t, v
    if t is float or t is complex:
        return t, repr(v)
    if depth > 32:
        raise Unkeyable(v)
    if t is tuple or t is list:
        return t, tuple([static_key(e, depth + 1) for e in v])
    if t is set or t is frozenset:
        return t, frozenset([static_key(e, depth + 1) for e in v])
    if isinstance(v, Mapping):
        return t, tuple([(static_key(k, depth + 1), static_key(x, depth + 1)) for k, x in v.items()])
    if isinstance(v, (enum.Enum, *_BY_IDENTITY)):
        return t, v
    if isinstance(v, functools.partial):
        return t, static_key((v.func, v.args, dict(v.keywords)), depth + 1)
    if dataclasses.is_dataclass(v) and not isinstance(v, nn.Module):
        return t, tuple([(f.name, static_key(getattr(v, f.name), depth + 1)) for f in dataclasses.fields(v)])
    if isinstance(v, (np.dtype, jax.sharding.Sharding)):
        return t, v
    if isinstance(v, np.ndarray) and v.dtype.kind in "USMm":  # strings, dates: by value
        return t, (v.dtype.str, v.shape, v.tobytes())
    eq, h = getattr(t, "__eq__", None), getattr(t, "__hash__", None)
    if h is not None and eq is not object.__eq__ and h is not object.__hash__:
        try:
            hash(v)
        except Exception:  # noqa: BLE001 - unhashable, or a __hash__ that refuses: keyed by nothing
            raise Unkeyable(v) from None
        return t, v  # the type declares value semantics
    if h is object.__hash__ and eq is object.__eq__ and not hasattr(v, "__dict__"):
        return t, v  # no state to change (a sentinel such as ``object()``)
    raise Unkeyable(v)


# -- non-pytree objects holding arrays ---------------------------------------------
def _is_device_value(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.core.Tracer))


def held_arrays(obj: Any, depth: int = 0) -> list[tuple[tuple[str, ...], Any]]:
    """``[(attribute path, array)]`` for the arrays a plain (non-pytree) object holds in its
    attributes, recursively through nested plain objects; ``[]`` for anything else
    (modules, classes, functions, objects without ``__dict__``)."""
    if depth > 8 or isinstance(obj, (nn.Module, type, types.FunctionType, types.MethodType,
                                     types.ModuleType, functools.partial)):
        return []
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict):
        return []
    out: list[tuple[tuple[str, ...], Any]] = []
    for name, v in attrs.items():
        if not isinstance(name, str):
            continue
        if _is_device_value(v):
            out.append(((name,), v))
        else:
            out.extend(((name,) + p, a) for p, a in held_arrays(v, depth + 1))
    return out


def with_arrays(obj: Any, paths: list[tuple[str, ...]], arrays: list[Any]) -> Any:
    """A shallow copy of ``obj`` (and of each nested object on ``paths``) whose attributes at
    ``paths`` are ``arrays``; ``obj`` itself is left as it was."""
    copies: dict[tuple[str, ...], Any] = {}

    def copy_at(prefix: tuple[str, ...]) -> Any:
        if prefix in copies:
            return copies[prefix]
        if prefix:
            parent = copy_at(prefix[:-1])
            src = parent.__dict__[prefix[-1]]
        else:
            src = obj
        new = object.__new__(type(src)) if type(src).__new__ is object.__new__ else copy.copy(src)
        new.__dict__.update(src.__dict__)
        if prefix:
            parent.__dict__[prefix[-1]] = new
        copies[prefix] = new
        return new

    root = copy_at(())
    for path, a in zip(paths, arrays):
        copy_at(path[:-1]).__dict__[path[-1]] = a
    return root


# -- the runner ----------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class SignatureRecord:
    """What the trace of one input signature knew, handed back with every call of it."""

    out_tree: Any = None
    statics: dict[int, Any] = dataclasses.field(default_factory=dict)
    build: Callable[[list], Any] | None = None  # the result from its leaves (:func:`_builder`), else:
    skeleton: Any = None  # flax's key order, put back after jax's unflatten
    reorder: bool = True  # the result has a mapping jax's unflatten would sort
    objects: dict[int, tuple[list[tuple[str, ...]], int]] = dataclasses.field(default_factory=dict)
    recorded: Any = None  # what a ``post`` hook recorded at trace time (an inspection's plan)
    trace_ms: float = 0.0
    compile_ms: float = 0.0


class RunResult(NamedTuple):
    """What :meth:`Runner.run` hands back; arrays may still be computing."""

    result: Any  # flax's result (or what ``post`` made of it)
    alongside: Any  # the arrays ``post`` computed alongside (an inspection's statistics)
    record: SignatureRecord  # what the trace of this signature knew
    cached: bool  # nothing was traced or compiled for this call


class _Carrier:
    """A program's output: the arrays, with the :class:`SignatureRecord` of the signature
    that ran as pytree aux data, so jax's own dispatch hands it back without a lookup."""

    __slots__ = ("record", "arrays", "alongside")

    def __init__(self, record: SignatureRecord, arrays: Any, alongside: Any):
        self.record, self.arrays, self.alongside = record, arrays, alongside


jax.tree_util.register_pytree_node(
    _Carrier, lambda c: ((c.arrays, c.alongside), c.record), lambda record, kids: _Carrier(record, *kids))


@dataclasses.dataclass(eq=False)
class _Program:
    """One ``jax.jit`` per input structure; jax keys its executables by shape, dtype, weak
    type and sharding. ``signatures`` counts the executables it holds."""

    jitted: jax.stages.Wrapped
    make_body: Callable[[], Callable]
    signatures: int = 0
    used: int = 0
    plain: bool = False  # takes the inputs whole (jax arrays and None in dicts, lists and tuples)


class _Direct(NamedTuple):
    """The last signature of a plain call, run by jax's C++ dispatch straight from the caller's
    arguments (:func:`~inspector._compat.direct_call`): jax refuses any other signature, and
    ``order`` checks the key order jax does not see."""

    call: Callable[..., Any]
    order: Callable[[tuple, dict], bool] | None
    build: Callable[[list], Any] | None  # None: jax's dispatch builds the result itself
    frozen: bool
    program: _Program


FLAX_ENTRIES: dict[Kind, Callable] = {
    "apply": nn.apply, "init": nn.init, "init_with_output": nn.init_with_output,
}
"""flax's own ``apply``/``init``/``init_with_output``, taken at import: a runner always calls these, so
``flax.linen.apply`` may be routed to :func:`inspector.apply` (as ``make conformance`` does) without recursion."""


_ARRAY_TYPES = frozenset((type(jnp.zeros(())), type(jax.random.key(0))))  # jax arrays, typed PRNG keys
_flatten = jax.tree_util.tree_flatten
_NOT_PLAIN = object()
_FLAX_FLAGS = flax_flags()
_current = threading.local()  # this thread's call: its inputs and phase callback, for the trace to read


def _call(target: Callable, inputs: Any, on_phase: Callable[[str], None] | None,
          counted: bool = True) -> tuple[Any, float | None]:
    """``(target(inputs), when tracing ended or None if nothing was traced)``; a trace is added to
    the runner's ``traces`` only if ``counted``."""
    cur = _current
    cur.inputs, cur.on_phase, cur.traced, cur.uncounted = inputs, on_phase, None, not counted
    try:
        return target(inputs), cur.traced
    finally:
        cur.inputs = cur.on_phase = cur.traced = None  # hold no arrays past the call
        cur.uncounted = False
        status = getattr(cur, "status", None)
        if status is not None:  # started by the trace (:meth:`Runner._trace`)
            cur.status = None
            status.close()


def _staged(carrier: _Carrier) -> bool:
    """True if the program was staged into an enclosing trace instead of run."""
    probe = carrier.arrays[0] if carrier.arrays else next(iter(jax.tree.leaves(carrier.alongside)), None)
    return isinstance(probe, jax.core.Tracer)


def _plain_skeleton(x: Any) -> Any:
    """``x``'s key-order skeleton (as :func:`_order_skeleton`) if ``x`` is made only of jax
    arrays, ``None`` and plain dicts/lists/tuples; else ``_NOT_PLAIN``. One walk over the
    containers: the price of keeping flax's key order, which jax's flatten sorts away."""
    t = type(x)
    if t in _ARRAY_TYPES or x is None:
        return None
    if t is dict or t is FrozenDict:
        pairs = []
        for k, v in x.items():
            s = None if type(v) in _ARRAY_TYPES else _plain_skeleton(v)
            if s is _NOT_PLAIN:
                return s
            pairs.append((k, s))
        return tuple(pairs)
    if t is tuple or t is list:
        out = []
        for v in x:
            s = None if type(v) in _ARRAY_TYPES else _plain_skeleton(v)
            if s is _NOT_PLAIN:
                return s
            out.append(s)
        return tuple(out)
    return _NOT_PLAIN


class _LayoutCheck:
    """One generated expression that a later input must satisfy to be laid out as the inputs
    given to :meth:`add`. With ``full``: each container's type and length, every dict's keys in
    order and a jax array or None at each leaf. Without: only the key order of each dict of two
    or more keys, which is all that jax's own dispatch does not check. Keys are held in ``K``."""

    def __init__(self, full: bool, first: str | None = None) -> None:
        self.full = full
        self.terms: list[str] = [first] if first else []
        self.keys: list[Any] = []
        self._names = itertools.count()

    def add(self, x: Any, expr: str, depth: int = 0) -> bool:
        """Adds what the value at ``expr`` must satisfy to be laid out as ``x``; False if ``x`` is too
        large or deep for one expression (or, with ``full``, holds something else than containers,
        arrays and None)."""
        t = type(x)
        if self.full and (t in _ARRAY_TYPES or x is None):
            self.terms.append(f"(type({expr}) in A or {expr} is None)")
            return True
        if depth > 64 or len(self.terms) > _BUILD_LIMIT:
            return False
        if t not in (dict, FrozenDict, tuple, list):
            return not self.full
        if self.full:  # named once, read by the terms after it
            name = f"v{next(self._names)}"
            self.terms.append(f"type({name} := {expr}) is {t.__name__ if t is not FrozenDict else 'F'}")
        else:  # read only where a dict's order is checked
            name = expr
        if t is dict or t is FrozenDict:
            if self.full or len(x) > 1:
                self.keys.append(tuple(x))
                self.terms.append(f"tuple({name}) == K[{len(self.keys) - 1}]")
            for k, v in x.items():
                self.keys.append(k)
                if not self.add(v, f"{name}[K[{len(self.keys) - 1}]]", depth + 1):
                    return False
            return True
        if self.full:
            self.terms.append(f"len({name}) == {len(x)}")
        return all(self.add(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(x))

    def build(self, params: str) -> Callable[..., bool]:
        return eval(f"lambda {params}: {' and '.join(self.terms)}",  # keys are in K
                    {"K": tuple(self.keys), "A": _ARRAY_TYPES, "F": FrozenDict})


def _guard(inputs: Any, frozen: bool) -> Callable[[Any, bool], bool] | None:
    """A function of ``(inputs, flax_return_frozendict)`` that is true only for inputs of the same
    containers (types, lengths and key order) with a jax array or None at each leaf, as
    ``inputs`` and ``frozen``: one generated expression, where :func:`_plain_skeleton` walks
    the containers a call at a time. None for inputs too large for one expression."""
    check = _LayoutCheck(full=True, first=f"f is {frozen}")
    return check.build("i, f") if check.add(inputs, "i") else None


def _same_layout(x: Any, y: Any) -> bool:
    """What :func:`_guard`'s generated expression computes, written plainly (a test holds the two to
    agree): ``y`` has ``x``'s containers (types, lengths, key order) and a jax array or None wherever
    ``x`` has one."""
    t = type(x)
    if t in _ARRAY_TYPES or x is None:
        return type(y) in _ARRAY_TYPES or y is None
    if type(y) is not t:
        return False
    if t is dict or t is FrozenDict:
        return tuple(y) == tuple(x) and all(_same_layout(v, y[k]) for k, v in x.items())
    return len(y) == len(x) and all(_same_layout(a, b) for a, b in zip(x, y))


def _order_check(inputs: tuple[tuple, dict]) -> tuple[bool, Callable[[tuple, dict], bool] | None]:
    """``(fits, check)``: ``check`` is a function of ``(args, kwargs)`` that is true only if every dict
    of two or more keys has the key order it has in ``inputs`` (jax's dispatch checks the rest), None
    if no dict needs it; ``fits`` is false if the check would be too large for one expression."""
    check = _LayoutCheck(full=False)
    if not (check.add(inputs[0], "a") and check.add(inputs[1], "k")):
        return False, None
    return True, (check.build("a, k") if check.terms else None)


DEFAULT_CACHE_SIZE = 64


class Runner:
    """One flax call (``kind``) of ``fn`` on ``module``, jitted and cached per signature.

    Called as flax's returned function is: ``runner(variables, *args, rngs=None, **kw)``
    for ``apply``, ``runner(rngs, *args, **kw)`` for the init forms. ``post``, if
    given, runs inside the trace on ``(inputs, result, recorder)`` and returns
    ``(result, arrays alongside, trace-time record)``: the result to hand back, arrays to
    compute alongside (statistics) and what only the trace knew (``SignatureRecord.recorded``).

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
    with it goes straight to its executable (:class:`_Direct`) until a call does not fit.
    """

    intercepts = True
    """Whether the linen method calls inside :meth:`invoke` are intercepted and recorded (binding
    trace, sows, patches, the module an error was raised in). A runner of NNX modules turns it off,
    and has no linen ``fn``: it overrides :meth:`invoke`."""

    def __init__(self, kind: Kind, fn: Callable | None, module: nn.Module | nnx.Module, mutable: CollectionFilter,
                 capture_intermediates: CaptureFilter, post: Callable | None = None,
                 patches: dict[str, Any] | None = None, cache_size: int = DEFAULT_CACHE_SIZE):
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size!r}")
        self.kind = kind
        self.fn = fn
        self.module = module
        self.mutable = mutable
        self.capture = capture_intermediates
        self.post = post
        self.cache_size = cache_size
        self.patches: dict[tuple[tuple[str, ...], str], dict[int | None, Any]] = {}
        for key, patch in (patches or {}).items():
            path, method, index = parse_call_key(key)
            self.patches.setdefault((path, method), {})[index] = patch
        self.traces = 0
        self.compiles = 0
        self._programs: dict[Any, _Program] = {}
        self._last: tuple[Callable[[Any, bool], bool], _Program] | None = None  # :func:`_guard` of the last call
        self._direct: _Direct | None = None
        self._direct_wait = 0  # calls to let go by before the next :class:`_Direct`; doubles on each refusal
        self._direct_backoff = 0
        self._clock = 0  # least recently used: the smallest ``_Program.used``
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """flax's call on these arguments, jitted; an error raised in it shows no inspector frame in
        its traceback (see :mod:`inspector._tracebacks`)."""
        try:
            direct = self._direct
            if direct is not None:
                try:
                    if direct.frozen is _FLAX_FLAGS["flax_return_frozendict"] and (
                            direct.order is None or direct.order(args, kwargs)):
                        out = direct.call(*args, **kwargs)
                        return out if direct.build is None else direct.build(out)
                except Exception:  # noqa: BLE001 - not the direct signature: the general path runs it, or raises
                    pass
                if not inside_transform():  # a call traced by the caller's transform says nothing of the next ones
                    self._refused(direct)
            try:
                result, program = self._run(args, kwargs, None)
            except _InsideTransform:
                # Called inside the caller's own transform (jit, grad, vmap): let it trace flax.
                return self._call_flax(args, kwargs, Recorder())
            except UnsortableKeys:
                return self.call_unjitted(args, kwargs)  # flax's own error, or its unjitted result
            if result.cached and self._direct is None:
                self._make_direct(program, (args, kwargs), result.record)
            return result.result
        except Exception as e:
            failure.capture(self, args, kwargs, e)  # fi.last_failure(): only on this path, never on success
            hide_frames(e)
            raise

    def call_unjitted(self, args: tuple, kwargs: dict) -> Any:
        """flax's call as flax runs it, outside ``jax.jit`` (for inputs no program can take)."""
        return self._call_flax(args, kwargs, Recorder())

    def _refused(self, direct: _Direct) -> None:
        """The direct signature did not fit a call: drop it, and wait twice as long as last time
        before making another (alternating signatures stay on the general path)."""
        if self._direct is direct:
            self._direct = None
            self._direct_backoff = min(2 * self._direct_backoff, 1024) or 1
            self._direct_wait = self._direct_backoff

    def _make_direct(self, program: _Program, inputs: tuple[tuple, dict], record: SignatureRecord) -> None:
        """After a cached call of a plain program with nothing to put back but flax's key order,
        calls with the same signature go straight to its executable (:class:`_Direct`). Where
        every dict of the result is in sorted key order, jax's dispatch builds the result."""
        if self._direct_wait > 0:
            self._direct_wait -= 1
            return
        if (not program.plain or self.post is not None or self._direct_backoff < 0 or record.build is None
                or record.statics or record.objects):
            return
        fits, order = _order_check(inputs)
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
            made, traced = _call(lambda i: direct_call(program.jitted, i, leaves_as), inputs, None, counted=False)
        finally:
            with contextlib.suppress(AssertionError, ValueError):  # gone if someone cleared jax's listeners
                jax.monitoring.unregister_event_duration_listener(on_compile)
        if made is None or traced is not None or compiled:
            self._direct_backoff = -1  # jax compiled or traced again to get there: never for this runner
            return
        call, out_tree = made
        if out_tree.node_data()[1].out_tree != record.out_tree:  # not the executable that record describes
            return
        build = None if leaves_as is not None else record.build
        self._direct = _Direct(call, order, build, flax.config.flax_return_frozendict, program)

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
            raise _InsideTransform()
        try:
            program, inputs = self._program(args, kwargs)
            carrier, traced = _call(program.jitted, inputs, on_phase)
        except ValueError as e:
            where = unsortable_keys((args, kwargs))
            if where is None:
                raise
            raise UnsortableKeys(where) from e
        if _staged(carrier):  # concrete inputs, but inside the caller's own trace
            raise _InsideTransform()
        record = carrier.record
        if traced is not None:
            record.compile_ms = (time.perf_counter() - traced) * 1000
            self.compiles += 1
            self._admit(program)
        self._clock += 1
        program.used = self._clock
        if on_phase is not None:
            on_phase("running")
        return RunResult(_unflatten(record, carrier.arrays), carrier.alongside, record, traced is None), program

    @entry_point
    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """jax's ``Lowered`` form of the program a call with these inputs runs (``.as_text()``
        is its StableHLO, ``.compile().as_text()`` the optimized HLO)."""
        program, inputs = self._program(args, kwargs)
        lowered, traced = _call(program.jitted.lower, inputs, None)
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
        lowered, traced = _call(program.jitted.lower, inputs, None, counted=False)
        if stop():
            return
        lowered.compile()
        self.compiles += 1
        if traced is not None:
            self._admit(program)

    def _program(self, args: tuple, kwargs: dict) -> tuple[_Program, Any]:
        """The program for these inputs and what to call it with. Raises
        :class:`_InsideTransform` if an input is a tracer of an enclosing transform."""
        inputs = (args, kwargs)
        frozen = flax.config.flax_return_frozendict
        last = self._last
        if last is not None and last[0](inputs, frozen):  # the same containers as the last call
            return last[1], inputs
        skeleton = _plain_skeleton(args)
        kw_skeleton = _plain_skeleton(kwargs) if kwargs else None
        if skeleton is not _NOT_PLAIN and kw_skeleton is not _NOT_PLAIN:
            key: tuple[Any, ...] = (skeleton, kw_skeleton, frozen)
            program = self._programs.get(key)
            if program is None:
                whole = (skeleton, kw_skeleton or {})
                program = self._new_program(key, lambda: self._structured_body(whole), plain=True)
            guard = _guard(inputs, frozen)
            self._last = None if guard is None else (guard, program)
            return program, inputs
        leaves, treedef = _flatten((args, kwargs))
        dyn, statics, skey = self._split(leaves)
        order, n = _order_skeleton((args, kwargs)), len(leaves)  # a kept program holds none of the arrays
        flat = _FlatInputs(dyn, _Statics(skey, statics))

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
            direct = self._direct
            if direct is not None:  # its calls bypass :meth:`run`, which counts use
                direct.program.used = self._clock
            total = sum(p.signatures for p in self._programs.values())
            for key, other in sorted(self._programs.items(), key=lambda kv: kv[1].used):
                if total <= self.cache_size:
                    return
                if other is not program:
                    total -= other.signatures
                    del self._programs[key]
                    self._last = self._direct = None
            if total > self.cache_size:
                program.jitted, program.signatures = jax.jit(program.make_body()), 0
                self._direct = None

    def _split(self, leaves: list) -> tuple[list, list, Any]:
        """``(arrays, [(index, static)], statics key or None if unkeyable)``."""
        dyn, statics = [], []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, jax.core.Tracer):
                raise _InsideTransform()
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
            args, kwargs = _reorder(inputs, skeleton)
            return self._trace(args, kwargs)
        return body

    def _flat_body(self, treedef: Any, order: Any, n: int) -> Callable:
        """The traced function for the arrays and the statics of the call being traced (not of the
        call that made the program: an equal set or config passed then may have changed since)."""
        def body(flat: _FlatInputs):
            static_at = dict(flat.statics.values)
            it = iter(flat.arrays)
            full = [static_at[i] if i in static_at else next(it) for i in range(n)]
            args, kwargs = _reorder(jax.tree.unflatten(treedef, full), order)
            return self._trace(args, kwargs)
        return body

    def _trace(self, args: tuple, kwargs: dict) -> _Carrier:
        """Runs flax inside the trace and records what only the trace knows."""
        on_phase = getattr(_current, "on_phase", None)
        if on_phase is None and not getattr(_current, "uncounted", False):  # a slow call says where it is
            status = getattr(_current, "status", None)  # one per call, if jax traces twice
            if status is None:
                status = _current.status = progress.start(type(self.module).__name__)
            on_phase = status.phase
        t0 = time.perf_counter()
        if on_phase is not None:
            on_phase("tracing")
        if not getattr(_current, "uncounted", False):
            self.traces += 1
        concrete = jax.tree.leaves(getattr(_current, "inputs", None))
        multi_device = any(len(getattr(getattr(x, "sharding", None), "device_set", ())) > 1 for x in concrete)
        record = SignatureRecord()
        recorder = Recorder(detailed=self.post is not None, multi_device=multi_device,
                            at_capture=getattr(self.post, "at_capture", None), top=_current_trace())
        own_args, own_kwargs = fresh_containers((args, kwargs))  # a model may write into a dict it is given
        result = self._call_flax(own_args, own_kwargs, recorder)
        alongside = None
        if self.post is not None:
            result, alongside, record.recorded = self.post((args, kwargs), result, recorder)
        out_leaves, record.out_tree = jax.tree.flatten(result, is_leaf=lambda x: x is None)
        record.build = _builder(result, out_leaves)
        record.reorder = _needs_reorder(result)
        if record.build is None:  # jax's unflatten, then flax's key order put back
            record.skeleton = _order_skeleton(result)
        arrays = []
        for j, leaf in enumerate(out_leaves):
            if _is_device_value(leaf):
                arrays.append(leaf)
                continue
            record.statics[j] = leaf
            held = held_arrays(leaf)
            if held:  # arrays inside a non-pytree object: computed, and put back into a copy
                record.objects[j] = ([p for p, _ in held], len(arrays))
                arrays.extend(a for _, a in held)
        t1 = time.perf_counter()
        record.trace_ms = (t1 - t0) * 1000
        _current.traced = t1
        if on_phase is not None:
            on_phase("compiling")
        return _Carrier(record, arrays, alongside)

    def _check_patches(self, recorder: Recorder) -> None:
        """A patch that matched no call is a typo: say so, listing calls that ran."""
        for (path, method), by_index in self.patches.items():
            for index in by_index:
                if (path, method, index) not in recorder.patched:
                    seen = ", ".join(f"{path_str(p)}:{m}" for p, m in list(recorder.seen)[:12])
                    where = f"{path_str(path)}:{method}" + (f"[{index}]" if index is not None else "")
                    raise KeyError(f"patch {where!r} matched no call; calls seen: {seen}")

    def _check_capture(self, recorder: Recorder) -> None:
        """A path, type or method filter that captured nothing is likely a typo: warn, naming the
        closest paths, types or methods that ran (once per filter and model)."""
        asked, recorder.asked = recorder.asked, {}
        if getattr(_current, "uncounted", False):  # compiled ahead (in the background): the call warned
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

    def _call_flax(self, args, kwargs, recorder: Recorder):
        """:meth:`invoke` under ``recorder``: interception, scope probes (``detailed``), patches checked
        afterwards, and an error noted with the module and method it was raised in."""
        capture = self.capture
        if callable(capture):
            capture = _noting_site(guarded(capture, recorder.on_capture, recorder.on_ask), recorder)
        elif capture is True:
            capture = _noting_site(guarded(capture_calls, recorder.on_capture), recorder)
        if callable(capture) and recorder.at_capture is not None and self.intercepts:
            capture = recorder.asking(capture)
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


def _noting_site(filter_fn: Callable, recorder: Recorder) -> Callable:
    """``filter_fn``, charging an error it raises to the module it was asked about (flax calls
    the filter after that module's method returned, outside the interceptor)."""

    def noting(module: Any, method_name: str) -> bool:
        try:
            return filter_fn(module, method_name)
        except CaptureFilterError:
            if recorder.error_site is None:
                try:
                    path = tuple(module.path)
                except Exception:  # noqa: BLE001 - unbound
                    path = ("<unbound>",)
                recorder.error_site = Frame(path, type(module).__name__, method_name)
            raise

    noting.__wrapped__ = filter_fn  # type: ignore[attr-defined]  # mypy does not allow setting attributes on a function
    return noting


class _Statics:
    """A call's static (non-array) inputs, ``[(leaf index, value)]``, equal for equal ``key``
    (:func:`static_key`; identity where it is None). Carried as pytree aux data, so jax traces with
    the calling call's values and keys its cache on their value."""

    __slots__ = ("key", "values")

    def __init__(self, key: Any, values: list[tuple[int, Any]]):
        self.key, self.values = key, values

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Statics) and self.key is not None and self.key == other.key)

    def __hash__(self) -> int:
        return hash(self.key) if self.key is not None else id(self)


class _FlatInputs:
    """A call's array leaves and its :class:`_Statics`."""

    __slots__ = ("arrays", "statics")

    def __init__(self, arrays: list, statics: _Statics):
        self.arrays, self.statics = arrays, statics


jax.tree_util.register_pytree_node(
    _FlatInputs, lambda f: ((f.arrays,), f.statics), lambda statics, kids: _FlatInputs(kids[0], statics))


class UnsortableKeys(TypeError):
    """An input dict whose keys cannot be sorted (``1`` and ``'1'``): jax cannot flatten it, so no
    program can take it. ``where`` names the dict (``args[0]['cache']``)."""

    def __init__(self, where: str):
        super().__init__(f"inspector: the dict at {where} has keys of types that cannot be sorted together "
                         "(say 1 and '1'); jax.jit cannot take it as an input. Use keys of one type.")
        self.where = where


def unsortable_keys(x: Any, where: str = "") -> str | None:
    """Where in ``(args, kwargs)`` the first dict whose keys cannot be sorted is, or None."""
    if not where:
        args, kwargs = x
        found = unsortable_keys(args, "args")
        return found if found is not None else unsortable_keys(kwargs, "kwargs")
    if isinstance(x, Mapping):
        try:
            sorted(x)
        except TypeError:
            return where
        items: Any = x.items()
    elif isinstance(x, (tuple, list)):
        items = enumerate(x)
    else:
        return None
    for k, v in items:
        found = unsortable_keys(v, f"{where}[{k!r}]")
        if found is not None:
            return found
    return None


class _InsideTransform(Exception):
    """Inputs are tracers of an enclosing transform; no caching is possible."""


def _unflatten(entry: SignatureRecord, arrays: list) -> Any:
    if entry.objects:
        arrays = list(arrays)
        taken: set[int] = set()
        statics = dict(entry.statics)
        for j, (paths, start) in entry.objects.items():
            statics[j] = with_arrays(entry.statics[j], paths, arrays[start:start + len(paths)])
            taken.update(range(start, start + len(paths)))
        arrays = [a for i, a in enumerate(arrays) if i not in taken]
    else:
        statics = entry.statics
    if statics:
        it = iter(arrays)
        full = [statics[j] if j in statics else next(it) for j in range(entry.out_tree.num_leaves)]
    else:
        full = arrays
    if entry.build is not None:
        return entry.build(full)
    out = jax.tree.unflatten(entry.out_tree, full)
    return _reorder(out, entry.skeleton) if entry.reorder else out
