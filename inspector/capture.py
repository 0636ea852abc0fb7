"""Capture filters: what to record while a flax module runs.

A filter is called by flax as ``filter(module, method_name) -> bool`` after each
wrapped method returns. Filters here compose with ``&``, ``|`` and ``~`` and are
*safe*: whatever they say, they never capture ``setup``, private methods
(``_helper``), unbound modules, or the throw-away wrapper calls that lifted
transforms make (see :func:`inspector._compat.is_lifted_wrapper_call`)::

    from inspector import capture as C
    C.methods("encode", "decode") | C.types(nn.Dense)
    C.paths("Encoder/*/Dense_*") & ~C.depth(max=1)

Filters never fail silently: one built from arguments it cannot use raises
:class:`CaptureFilterError` when built, and a path, type or method filter that captures
nothing in a call warns (:class:`CaptureFilterWarning`, once per filter and model) with the
closest module paths, types or methods that ran.
"""

from __future__ import annotations

import difflib
import os
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from inspector._compat import is_lifted_wrapper_call, shape_pass
from inspector.names import Glob, format_path, quote, safe

if TYPE_CHECKING:
    import flax.linen as nn

CaptureFilter = bool | Callable[["nn.Module", str], bool]
"""What ``capture_intermediates`` takes, as in flax: ``True`` (every ``__call__``), ``False``, or a
predicate ``filter(module, method_name) -> bool`` such as a :class:`Filter`."""


class CaptureFilterError(RuntimeError):
    """A capture filter raised (the message names the module path and method it was asked about),
    or a filter was built from arguments it cannot use (``C.types(3)``, ``C.paths(None)``)."""


class CaptureFilterWarning(UserWarning):
    """A path, type or method filter captured nothing in a call: no module path, module type or
    method name that ran matches it (a typo such as ``C.paths("encodr/**")``). Given once per
    filter and model; the message names the closest paths, types or methods that ran."""


def _describe(x: Any) -> str:
    """``x`` for an error message: its type and a short, safe ``repr``."""
    text = _safe_repr(x)
    return safe(f"{type(x).__name__} {text[:80] + '...' if len(text) > 80 else text}")


def _safe_repr(x: Any) -> str:
    try:
        return repr(x)
    except Exception:  # noqa: BLE001 - a user object whose repr raises
        return f"<{type(x).__name__} object>"


def _flat(what: str, given: tuple, expected: str) -> tuple:
    """``given`` with one level of list/tuple/set unpacked (``C.types([nn.Dense, nn.Conv])``); a
    clear :class:`CaptureFilterError` if nothing is left."""
    out: list = []
    for g in given:
        if isinstance(g, (list, tuple, set, frozenset)):
            out.extend(sorted(g, key=str) if isinstance(g, (set, frozenset)) else g)
        else:
            out.append(g)
    if not out:
        raise CaptureFilterError(f"C.{what}() needs at least one {expected}")
    return tuple(out)


def user_call(module: Any, method_name: str) -> bool:
    """Whether an intercepted method call is one the model made: a method of a bound module, not
    ``setup`` and not the wrapper a lifted transform (``nn.scan``, ``nn.vmap``, ...) calls through."""
    return not (method_name == "setup" or is_lifted_wrapper_call(method_name)
                or getattr(module, "scope", None) is None)


def recorded_call(module: Any, method_name: str) -> bool:
    """:func:`user_call`, and not during a lifted transform's structure-only pass (which flax runs
    to find shapes, and then runs the method again): the one test every interceptor that records
    calls (the runner's, the gradients', the watch's) uses."""
    return user_call(module, method_name) and not shape_pass()


def public_method(method_name: str) -> bool:
    """Whether a capture filter may match ``method_name``: ``__call__`` or a name without a leading ``_``."""
    return method_name == "__call__" or not method_name.startswith("_")


def _skipped(module: Any, method_name: str) -> bool:
    return not (user_call(module, method_name) and public_method(method_name))


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


def lift(f: Filter | Callable[[Any, str], bool] | bool) -> Filter:
    """A :class:`Filter` for ``f``: user callables become :func:`where`, ``True`` is :data:`calls`
    (what flax's ``capture_intermediates=True`` records) and ``False`` :data:`nothing`; anything
    else raises :class:`CaptureFilterError`."""
    if isinstance(f, Filter):
        return f
    if f is True or f is False:
        return calls if f else nothing
    if not callable(f):
        raise CaptureFilterError(f"a capture filter combines with other filters, functions "
                                 f"(module, method_name) -> bool, True or False, not {_describe(f)}")
    return where(f)


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


def _type_names(cls: type) -> set[str]:
    """The names a class answers to in :func:`types`: its name, qualified name and dotted path."""
    name, qualname = getattr(cls, "__name__", ""), getattr(cls, "__qualname__", "")
    return {name, qualname, f"{getattr(cls, '__module__', '')}.{qualname}"}


class _Types(Filter):
    def __init__(self, types):
        self.types = tuple(types)
        self._classes = tuple(t for t in self.types if isinstance(t, type))
        self._names = frozenset(t for t in self.types if isinstance(t, str))

    def match(self, module, method_name):
        if isinstance(module, self._classes):
            return True
        return bool(self._names) and any(self._names & _type_names(c) for c in type(module).__mro__)

    def __eq__(self, other):
        return isinstance(other, _Types) and self.types == other.types

    __hash__ = Filter.__hash__

    def __repr__(self):
        names = (repr(t) if isinstance(t, str) else str(getattr(t, "__name__", None) or _safe_repr(t))
                 for t in self.types)
        return safe(f"types({', '.join(names)})")


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
        name = getattr(self.fn, "__qualname__", None)
        return f"where({name!r})" if isinstance(name, str) else f"where({_safe_repr(self.fn)})"


everything: Filter = _Const(True)
"""Every public method of every bound module (``setup`` and ``_private`` excluded)."""
nothing: Filter = _Const(False)
"""Captures nothing (sow'ed values are still recorded, as in flax)."""
calls: Filter = _Methods(("__call__",))
"""``__call__`` of every module: what flax's ``capture_intermediates=True`` records."""


def types(*module_types: type | str) -> Filter:
    """Modules that are instances of any of ``module_types`` (subclasses included). A type may be
    given by class (``nn.Dense``) or by name: ``"Dense"``, a qualified name (``"Block.Inner"``) or a
    dotted path (``"flax.linen.linear.Dense"``), matched against the module's class and its bases.
    A list or tuple of them is unpacked; anything else raises :class:`CaptureFilterError`."""
    given = _flat("types", module_types, "module class (nn.Dense) or class name ('Dense')")
    for t in given:
        if isinstance(t, str) and t:
            continue
        if isinstance(t, type):
            continue
        import flax.linen as nn

        hint = f"; pass the class ({type(t).__name__}), not an instance" if isinstance(t, nn.Module) else ""
        raise CaptureFilterError(f"C.types() takes module classes (nn.Dense) or class names ('Dense'), "
                                 f"not {_describe(t)}{hint}")
    return _Types(given)


def _names(what: str, given: tuple, expected: str) -> tuple[str, ...]:
    """String arguments of :func:`paths` / :func:`methods`, a list or tuple of them unpacked."""
    out = _flat(what, given, expected)
    for g in out:
        if not isinstance(g, str):
            raise CaptureFilterError(f"C.{what}() takes {expected} as strings, not {_describe(g)}")
    return out


def paths(*globs: str) -> Filter:
    """Modules whose path matches a glob: ``*`` within a segment, ``**`` across (``"Encoder/**"``),
    ``?`` one character; other characters are literal, and a name holding ``/ : [ ] \\`` is
    written as in a key (``"enc\\:dec/*"``). The root module's path is ``""``. A list or tuple of
    globs is unpacked; a glob that is not a string raises :class:`CaptureFilterError`."""
    return _Paths(_names("paths", globs, "path globs ('Encoder/**')"))


def methods(*names: str) -> Filter:
    """Methods by name or glob (``"encode"``, ``"__call__"``, ``"decode_*"``); a list or tuple of
    names is unpacked; a name that is not a string raises :class:`CaptureFilterError`."""
    return _Methods(_names("methods", names, "method names or globs ('encode', 'decode_*')"))


def depth(min: int = 0, max: int | None = None) -> Filter:
    """Modules whose path length is within ``[min, max]`` (the root has depth 0). ``min`` is an int
    of at least 0, ``max`` an int of at least ``min`` or None (no limit); anything else raises
    :class:`CaptureFilterError`."""
    for name, value, optional in (("min", min, False), ("max", max, True)):
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CaptureFilterError(f"C.depth({name}=...) takes a non-negative int"
                                     f"{' or None' if optional else ''}, not {_describe(value)}")
    if max is not None and max < min:
        raise CaptureFilterError(f"C.depth(min={min}, max={max}): max is below min, so it would capture nothing")
    return _Depth(int(min), None if max is None else int(max))


def where(fn: Callable[[Any, str], bool]) -> Filter:
    """A user predicate ``fn(module, method_name)``, made safe and composable; a ``fn`` that is not
    callable raises :class:`CaptureFilterError`."""
    if not callable(fn):
        raise CaptureFilterError(f"C.where() takes a function (module, method_name) -> bool, not {_describe(fn)}")
    return _Where(fn)


def module_path(module: Any) -> str:
    """``'Encoder_0/Dense_1'`` for a bound module, ``'<unbound>'`` otherwise."""
    try:
        return format_path(module.path)
    except Exception:  # noqa: BLE001 - unbound modules raise on .path
        return "<unbound>"


def guarded(fn: Callable[[Any, str], bool], on_true: Callable[[Any, str], None] | None = None,
            on_ask: Callable[[Any, str], None] | None = None):
    """``fn`` wrapped so that an exception names the module path and method, so that
    ``on_true(module, method_name)`` is told of each capture (in execution order), and
    ``on_ask(module, method_name)`` of each question, before ``fn`` is asked."""

    def filter_fn(module: Any, method_name: str) -> bool:
        if on_ask is not None:
            on_ask(module, method_name)
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


# -- filters that capture nothing ------------------------------------------------
def name_filters(f: Filter) -> list[Filter]:
    """The path, type and method filters ``f`` is built from, except those under ``~``: the parts
    whose names can be misspelled so that ``f`` captures nothing."""
    if isinstance(f, (_Paths, _Types, _Methods)):
        return [f]
    if isinstance(f, (_All, _Any)):
        return [leaf for part in f.parts for leaf in name_filters(part)]
    return []


def _closest(words: Iterable[str], candidates: Iterable[str], what: str, limit: int = 8) -> str:
    """``'closest: 'a', 'b''`` from ``candidates`` for any of ``words``, else up to ``limit`` of
    ``candidates`` (``what`` names them)."""
    pool = list(dict.fromkeys(candidates))
    near: list[str] = []
    for w in words:
        near.extend(c for c in difflib.get_close_matches(w, pool, n=3, cutoff=0.6) if c not in near)
    if near:
        return "closest: " + ", ".join(map(repr, near[:limit]))
    more = f", ... ({len(pool)} in all)" if len(pool) > limit else ""
    return f"{what} that ran: " + ", ".join(map(repr, pool[:limit])) + more


def unmatched_reason(leaf: Filter, ran: list[tuple[Any, str]]) -> str:
    """Why the name filter ``leaf`` matched none of ``ran`` (``(module, method)`` pairs that ran),
    with the closest names that ran."""
    if isinstance(leaf, _Paths):
        paths_ran = [p for p in dict.fromkeys("/".join(map(quote, m.path)) for m, _ in ran) if p]
        candidates = paths_ran + [p + "/**" for p in paths_ran]
        return (f"no module path that ran matches it "
                f"({_closest([g.strip('/') for g in leaf.globs], candidates, 'module paths')})")
    if isinstance(leaf, _Methods):
        return (f"no method that ran has that name "
                f"({_closest(leaf.names, [n for _, n in ran], 'methods')})")
    assert isinstance(leaf, _Types)
    wanted = [t if isinstance(t, str) else getattr(t, "__name__", "") for t in leaf.types]
    return (f"no module that ran is of that type "
            f"({_closest(wanted, [type(m).__name__ for m, _ in ran], 'module types')})")


def unmatched_message(f: Filter, ran: list[tuple[Any, str]], model: str) -> str | None:
    """The warning for a filter ``f`` that captured nothing in a call of ``model`` whose wrapped
    method calls were ``ran``, or None if no path, type or method filter in it is to blame
    (``f`` is not built from them, or each of them matches some call)."""
    if f == calls or not ran:
        return None
    dead = [leaf for leaf in dict.fromkeys(name_filters(f)) if not any(leaf(m, n) for m, n in ran)]
    if not dead:
        return None
    if dead == [f]:
        reasons = unmatched_reason(f, ran)
    else:
        reasons = "; ".join(f"{leaf!r}: {unmatched_reason(leaf, ran)}" for leaf in dead)
    return safe(f"inspector: capture filter {f!r} captured nothing in a call of {model}: {reasons}. "
                f"(Warned once per filter and model.)")


_warned: OrderedDict[Any, None] = OrderedDict()
_warned_lock = threading.Lock()
_WARNED_LIMIT = 1024


def _internal_prefixes() -> tuple[str, ...]:
    import contextlib
    import functools

    import flax
    import jax

    dirs = [os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep for m in (sys.modules[__package__], jax, flax)]
    return (*dirs, contextlib.__file__, functools.__file__)


def warn_unmatched(f: Filter, ran: list[tuple[Any, str]], model: Any) -> None:
    """Warns (:class:`CaptureFilterWarning`) that ``f`` captured nothing in a call of ``model`` whose
    wrapped method calls were ``ran`` (``(module, method)`` pairs, bound and public), if a path,
    type or method filter in it matches none of them (see :func:`unmatched_message`); once per
    filter and model. The warning points at the first frame outside inspector, jax and flax."""
    try:
        key = hash((f, model))
    except Exception:  # noqa: BLE001 - an unhashable model: keyed by identity
        key = hash((f, id(model)))
    with _warned_lock:
        if key in _warned:
            return
    message = unmatched_message(f, ran, type(model).__name__)
    if message is None:
        return
    with _warned_lock:
        _warned[key] = None
        if len(_warned) > _WARNED_LIMIT:
            _warned.popitem(last=False)
    prefixes = _internal_prefixes()
    frame: Any = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(prefixes):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, CaptureFilterWarning, stacklevel=level)


def forget_warnings() -> None:
    """Forgets which filters were warned about: each warns again (see :func:`warn_unmatched`)."""
    with _warned_lock:
        _warned.clear()
