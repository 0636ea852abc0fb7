"""What flax did while it ran under the runner's trace: the method interceptor (:class:`Recorder`),
its events and frames, call patches, and the capture filter wrapper that charges an error to its
module (:func:`noting_site`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

from inspector._compat import (
    TouchKind, own_intermediates, shape_pass,
)
from inspector.capture import CaptureFilterError, public_method, recorded_call, user_call
from inspector.model import BindingCall
from inspector.names import Path, parse_key


EventKind = Literal["capture", "sow"]


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
    on_return: Callable[[Any, str, Any], Any] | None = None  # a user call's result -> what it returns instead
    asked: dict[tuple[Path, str], Any] = dataclasses.field(default_factory=dict)  # the filter was asked: module

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
        if not user_call(module, name):  # setup, an unbound module, or a lifted transform's wrapper class
            if name != "setup":
                self._lifted_call(module)  # kept for a bound wrapper only
            elif self.detailed and module.scope is not None and not shape_pass():
                return self._setup_call(module, next_fun, args, kwargs)
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
        return y if self.on_return is None else self.on_return(module, name, y)

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


def noting_site(filter_fn: Callable, recorder: Recorder) -> Callable:
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
