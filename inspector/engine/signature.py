"""What picks a compiled program for a call: which inputs are arrays (:func:`is_array`), static
values keyed by value and type (:func:`static_key`), plain input layouts and the generated guards
that recognise them (:func:`layout_guard`, :func:`order_check`, with their plain twin
:func:`same_layout`), and the flat form of inputs with statics (:class:`FlatInputs`)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from inspector.engine.results import BUILD_LIMIT


def is_array(x: Any) -> bool:
    """True for a jax array, and for a numpy array or scalar of a dtype jax takes (a string,
    date or object array is passed to flax as it is, as a static value)."""
    if isinstance(x, jax.Array):
        return True
    return isinstance(x, (np.ndarray, np.generic)) and _jax_dtype(x.dtype)


_WEAKLY: dict[type, bool] = {}  # per type: an array (jax's, numpy's) that can be held weakly


def weakly(x: Any) -> Any:
    """A weak reference to an array (``x`` itself for any other value, or an array that takes none:
    numpy scalars)."""
    held = _WEAKLY.get(type(x))
    if held is None:
        held = isinstance(x, (jax.Array, np.ndarray, np.generic))
        if held:
            try:
                weakref.ref(x)
            except TypeError:
                held = False
        _WEAKLY[type(x)] = held
    return weakref.ref(x) if held else x


def rebuilt(x: Any, leaf: Callable[[Any], Any]) -> Any:
    """``x`` with its plain containers (dicts, FrozenDicts, lists, tuples, namedtuples) rebuilt as they
    were, mappings in their own key order (jax's unflatten would sort them), and every other value
    (other pytree nodes too) replaced by ``leaf(value)``."""
    t = type(x)
    if t is dict or t is FrozenDict:
        return t({k: rebuilt(v, leaf) for k, v in x.items()})
    if t is tuple or t is list:
        return t(rebuilt(v, leaf) for v in x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return t(*(rebuilt(v, leaf) for v in x))
    return leaf(x)


@functools.cache
def _jax_dtype(dtype: np.dtype) -> bool:
    if dtype.kind in "OUSMm":
        return False
    try:
        jax.dtypes.canonicalize_dtype(dtype)
    except TypeError:
        return False
    return True


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


ARRAY_TYPES = frozenset((type(jnp.zeros(())), type(jax.random.key(0))))  # jax arrays, typed PRNG keys
NOT_PLAIN = object()


def plain_skeleton(x: Any) -> Any:
    """``x``'s key-order skeleton (as :func:`order_skeleton`) if ``x`` is made only of jax
    arrays, ``None`` and plain dicts/lists/tuples; else ``NOT_PLAIN``. One walk over the
    containers: the price of keeping flax's key order, which jax's flatten sorts away."""
    t = type(x)
    if t in ARRAY_TYPES or x is None:
        return None
    if t is dict or t is FrozenDict:
        pairs = []
        for k, v in x.items():
            s = None if type(v) in ARRAY_TYPES else plain_skeleton(v)
            if s is NOT_PLAIN:
                return s
            pairs.append((k, s))
        return tuple(pairs)
    if t is tuple or t is list:
        out = []
        for v in x:
            s = None if type(v) in ARRAY_TYPES else plain_skeleton(v)
            if s is NOT_PLAIN:
                return s
            out.append(s)
        return tuple(out)
    return NOT_PLAIN


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
        if self.full and (t in ARRAY_TYPES or x is None):
            self.terms.append(f"(type({expr}) in A or {expr} is None)")
            return True
        if depth > 64 or len(self.terms) > BUILD_LIMIT:
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
                    {"K": tuple(self.keys), "A": ARRAY_TYPES, "F": FrozenDict})


def layout_guard(inputs: Any, frozen: bool) -> Callable[[Any, bool], bool] | None:
    """A function of ``(inputs, flax_return_frozendict)`` that is true only for inputs of the same
    containers (types, lengths and key order) with a jax array or None at each leaf, as
    ``inputs`` and ``frozen``: one generated expression, where :func:`plain_skeleton` walks
    the containers a call at a time. None for inputs too large for one expression."""
    check = _LayoutCheck(full=True, first=f"f is {frozen}")
    return check.build("i, f") if check.add(inputs, "i") else None


def same_layout(x: Any, y: Any) -> bool:
    """What :func:`layout_guard`'s generated expression computes, written plainly (a test holds the two to
    agree): ``y`` has ``x``'s containers (types, lengths, key order) and a jax array or None wherever
    ``x`` has one."""
    t = type(x)
    if t in ARRAY_TYPES or x is None:
        return type(y) in ARRAY_TYPES or y is None
    if type(y) is not t:
        return False
    if t is dict or t is FrozenDict:
        return tuple(y) == tuple(x) and all(same_layout(v, y[k]) for k, v in x.items())
    return len(y) == len(x) and all(same_layout(a, b) for a, b in zip(x, y))


def order_check(inputs: tuple[tuple[Any, ...], dict[str, Any]]
                ) -> tuple[bool, Callable[[tuple[Any, ...], dict[str, Any]], bool] | None]:
    """``(fits, check)``: ``check`` is a function of ``(args, kwargs)`` that is true only if every dict
    of two or more keys has the key order it has in ``inputs`` (jax's dispatch checks the rest), None
    if no dict needs it; ``fits`` is false if the check would be too large for one expression."""
    check = _LayoutCheck(full=False)
    if not (check.add(inputs[0], "a") and check.add(inputs[1], "k")):
        return False, None
    return True, (check.build("a, k") if check.terms else None)


class Statics:
    """A call's static (non-array) inputs, ``[(leaf index, value)]``, equal for equal ``key``
    (:func:`static_key`; identity where it is None). Carried as pytree aux data, so jax traces with
    the calling call's values and keys its cache on their value."""

    __slots__ = ("key", "values")

    def __init__(self, key: Any, values: list[tuple[int, Any]]):
        self.key, self.values = key, values

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Statics) and self.key is not None and self.key == other.key)

    def __hash__(self) -> int:
        return hash(self.key) if self.key is not None else id(self)


class FlatInputs:
    """A call's array leaves and its :class:`Statics`."""

    __slots__ = ("arrays", "statics")

    def __init__(self, arrays: list[Any], statics: Statics):
        self.arrays, self.statics = arrays, statics


jax.tree_util.register_pytree_node(
    FlatInputs, lambda f: ((f.arrays,), f.statics), lambda statics, kids: FlatInputs(kids[0], statics))


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
