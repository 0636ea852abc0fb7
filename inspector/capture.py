"""Capture filters: what to record while a flax module runs.

A filter is called by flax as ``filter(module, method_name) -> bool`` after each
wrapped method returns. Filters here compose with ``&``, ``|`` and ``~`` and are
*safe*: whatever they say, they never capture ``setup``, private methods
(``_helper``), unbound modules, or the throw-away wrapper calls that lifted
transforms make (see :func:`inspector._compat.is_lifted_wrapper_call`)::

    from inspector import capture as C
    C.methods("encode", "decode") | C.types(nn.Dense)
    C.paths("Encoder/*/Dense_*") & ~C.depth(max=1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from inspector._compat import is_lifted_wrapper_call
from inspector.names import Glob, format_path, quote, safe

if TYPE_CHECKING:
    import flax.linen as nn

CaptureFilter = bool | Callable[["nn.Module", str], bool]
"""What ``capture_intermediates`` takes, as in flax: ``True`` (every ``__call__``), ``False``, or a
predicate ``filter(module, method_name) -> bool`` such as a :class:`Filter`."""


class CaptureFilterError(RuntimeError):
    """A capture filter raised; names the module path and method it was asked about."""


def _skipped(module: Any, method_name: str) -> bool:
    if method_name == "setup" or is_lifted_wrapper_call(method_name):
        return True
    if method_name.startswith("_") and method_name != "__call__":
        return True
    return getattr(module, "scope", None) is None


class Filter:
    """Base of composable, safe capture filters."""

    def match(self, module: Any, method_name: str) -> bool:
        """The filter's own rule, without the safety checks."""
        raise NotImplementedError

    def __call__(self, module: Any, method_name: str) -> bool:
        return not _skipped(module, method_name) and bool(self.match(module, method_name))

    def __and__(self, other: Filter | Callable) -> Filter:
        return _All((self, lift(other)))

    def __or__(self, other: Filter | Callable) -> Filter:
        return _Any((self, lift(other)))

    __rand__ = __and__
    __ror__ = __or__

    def __invert__(self) -> Filter:
        return _Not(self)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))


def lift(f: Filter | Callable[[Any, str], bool]) -> Filter:
    """A :class:`Filter` for ``f`` (user callables become :func:`where`)."""
    return f if isinstance(f, Filter) else where(f)


class _All(Filter):
    def __init__(self, parts: Iterable[Filter]) -> None:
        self.parts: tuple[Filter, ...] = tuple(p for f in parts for p in (f.parts if isinstance(f, _All) else (f,)))

    def match(self, module, method_name):
        return all(p.match(module, method_name) for p in self.parts)

    def __repr__(self):
        return "(" + " & ".join(map(repr, self.parts)) + ")"


class _Any(Filter):
    def __init__(self, parts: Iterable[Filter]) -> None:
        self.parts: tuple[Filter, ...] = tuple(p for f in parts for p in (f.parts if isinstance(f, _Any) else (f,)))

    def match(self, module, method_name):
        return any(p.match(module, method_name) for p in self.parts)

    def __repr__(self):
        return "(" + " | ".join(map(repr, self.parts)) + ")"


class _Not(Filter):
    def __init__(self, inner):
        self.inner = inner

    def match(self, module, method_name):
        return not self.inner.match(module, method_name)

    def __repr__(self):
        return f"~{self.inner!r}"


class _Const(Filter):
    def __init__(self, value: bool):
        self.value = value

    def match(self, module, method_name):
        return self.value

    def __repr__(self):
        return "everything" if self.value else "nothing"


class _Types(Filter):
    def __init__(self, types):
        self.types = tuple(types)

    def match(self, module, method_name):
        return isinstance(module, self.types)

    def __repr__(self):
        return safe(f"types({', '.join(t.__name__ for t in self.types)})")


class _Paths(Filter):
    def __init__(self, globs):
        self.globs = tuple(globs)
        self._globs = tuple(Glob(g.strip("/")) for g in self.globs)

    def match(self, module, method_name):
        p = "/".join(map(quote, module.path))
        return any(g.match(p) for g in self._globs)

    def __eq__(self, other):
        return isinstance(other, _Paths) and self.globs == other.globs

    __hash__ = Filter.__hash__

    def __repr__(self):
        return f"paths({', '.join(map(repr, self.globs))})"


class _Methods(Filter):
    def __init__(self, names):
        self.names = tuple(names)
        self._globs = tuple(Glob(n) for n in self.names)

    def match(self, module, method_name):
        return any(g.match(method_name) for g in self._globs)

    def __eq__(self, other):
        return isinstance(other, _Methods) and self.names == other.names

    __hash__ = Filter.__hash__

    def __repr__(self):
        return f"methods({', '.join(map(repr, self.names))})"


class _Depth(Filter):
    def __init__(self, min: int, max: int | None):
        self.min, self.max = min, max

    def match(self, module, method_name):
        d = len(module.path)
        return d >= self.min and (self.max is None or d <= self.max)

    def __repr__(self):
        return f"depth(min={self.min}, max={self.max})"


class _Where(Filter):
    def __init__(self, fn):
        self.fn = fn

    def match(self, module, method_name):
        return self.fn(module, method_name)

    def __repr__(self):
        return f"where({getattr(self.fn, '__qualname__', self.fn)!r})"


everything: Filter = _Const(True)
"""Every public method of every bound module (``setup`` and ``_private`` excluded)."""
nothing: Filter = _Const(False)
"""Captures nothing (sow'ed values are still recorded, as in flax)."""
calls: Filter = _Methods(("__call__",))
"""``__call__`` of every module: what flax's ``capture_intermediates=True`` records."""


def types(*module_types: type) -> Filter:
    """Modules that are instances of any of ``module_types`` (subclasses included)."""
    return _Types(module_types)


def paths(*globs: str) -> Filter:
    """Modules whose path matches a glob: ``*`` within a segment, ``**`` across (``"Encoder/**"``),
    ``?`` one character; other characters are literal, and a name holding ``/ : [ ] \\`` is
    written as in a key (``"enc\\:dec/*"``). The root module's path is ``""``."""
    return _Paths(globs)


def methods(*names: str) -> Filter:
    """Methods by name or glob (``"encode"``, ``"__call__"``, ``"decode_*"``)."""
    return _Methods(names)


def depth(min: int = 0, max: int | None = None) -> Filter:
    """Modules whose path length is within ``[min, max]`` (the root has depth 0)."""
    return _Depth(min, max)


def where(fn: Callable[[Any, str], bool]) -> Filter:
    """A user predicate ``fn(module, method_name)``, made safe and composable."""
    return _Where(fn)


def module_path(module: Any) -> str:
    """``'Encoder_0/Dense_1'`` for a bound module, ``'<unbound>'`` otherwise."""
    try:
        return format_path(module.path)
    except Exception:  # noqa: BLE001 - unbound modules raise on .path
        return "<unbound>"


def guarded(fn: Callable[[Any, str], bool], on_true: Callable[[Any, str], None] | None = None):
    """``fn`` wrapped so that an exception names the module path and method, and so
    that ``on_true(module, method_name)`` is told of each capture (in execution order)."""

    def filter_fn(module: Any, method_name: str) -> bool:
        try:
            result = bool(fn(module, method_name))
        except Exception as e:
            path = module_path(module)
            raise CaptureFilterError(safe(
                f"capture filter {fn!r} raised on module {path!r} "
                f"({type(module).__name__}), method {method_name!r}: {type(e).__name__}: {e}"
            )) from e
        if result and on_true is not None:
            on_true(module, method_name)
        return result

    filter_fn.__wrapped__ = fn  # type: ignore[attr-defined]  # mypy does not allow setting attributes on a function
    return filter_fn
