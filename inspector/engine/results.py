"""A program's results on their way back to the caller: what the trace of a signature knew
(:class:`SignatureRecord`), the pytree that carries it out of ``jax.jit`` (:class:`Carrier`), flax's
key order put back (:func:`restore_order`, or the generated :func:`result_builder` with its plain twin),
and arrays held by non-pytree objects (:func:`held_arrays`, :func:`with_arrays`)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
from flax.core import FrozenDict


def order_skeleton(x: Any) -> Any:
    """Key order of every mapping in ``x``, in the form :func:`restore_order` reads."""
    if isinstance(x, (dict, FrozenDict)):
        return tuple((k, order_skeleton(v)) for k, v in x.items())
    if isinstance(x, (tuple, list)):
        return tuple(order_skeleton(v) for v in x)
    return None


def restore_order(x: Any, skel: Any) -> Any:
    if skel is None:
        return x
    if isinstance(x, FrozenDict):
        return FrozenDict({k: restore_order(x[k], s) for k, s in skel})
    if isinstance(x, dict):
        return type(x)((k, restore_order(x[k], s)) for k, s in skel) if type(x) is dict else x
    if isinstance(x, tuple):
        kids = (restore_order(v, s) for v, s in zip(x, skel))
        return type(x)(*kids) if hasattr(x, "_fields") else tuple(kids)  # a namedtuple, or a plain tuple
    if isinstance(x, list):
        return [restore_order(v, s) for v, s in zip(x, skel)]
    return x


def needs_reorder(x: Any) -> bool:
    """True if some mapping in ``x`` is not in sorted key order (jax's unflatten sorts them)."""
    if isinstance(x, (dict, FrozenDict)):
        keys = list(x)
        try:
            unsorted = keys != sorted(keys)
        except TypeError:
            unsorted = True
        return unsorted or any(needs_reorder(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return any(needs_reorder(v) for v in x)
    return False


BUILD_LIMIT = 20_000  # leaves; past it, jax's unflatten and a reorder


def result_builder(result: Any, leaves: list) -> Callable[[list], Any] | None:
    """A function of ``leaves`` (``result``'s, in jax's flatten order) that rebuilds ``result``
    with flax's key order in one generated expression, instead of jax's unflatten (which sorts
    every dict) and a reorder. Any other pytree node (a namedtuple, a ``flax.struct`` dataclass)
    is rebuilt from its children by its own one-level treedef. None if ``result`` is too large or
    deep for one expression."""
    if len(leaves) > BUILD_LIMIT:
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


# -- non-pytree objects holding arrays ---------------------------------------------
def is_device_value(x: Any) -> bool:
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
        if is_device_value(v):
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
    build: Callable[[list], Any] | None = None  # the result from its leaves (:func:`result_builder`), else:
    skeleton: Any = None  # flax's key order, put back after jax's unflatten
    reorder: bool = True  # the result has a mapping jax's unflatten would sort
    objects: dict[int, tuple[list[tuple[str, ...]], int]] = dataclasses.field(default_factory=dict)
    recorded: Any = None  # what the runner's hooks recorded at trace time (an inspection's plan)
    trace_ms: float = 0.0
    compile_ms: float = 0.0


class RunResult(NamedTuple):
    """What :meth:`Runner.run` hands back; arrays may still be computing."""

    result: Any  # flax's result (or what the hooks made of it)
    alongside: Any  # the arrays the hooks computed alongside (an inspection's statistics)
    record: SignatureRecord  # what the trace of this signature knew
    cached: bool  # nothing was traced or compiled for this call


class Carrier:
    """A program's output: the arrays, with the :class:`SignatureRecord` of the signature
    that ran as pytree aux data, so jax's own dispatch hands it back without a lookup."""

    __slots__ = ("record", "arrays", "alongside")

    def __init__(self, record: SignatureRecord, arrays: Any, alongside: Any):
        self.record, self.arrays, self.alongside = record, arrays, alongside


jax.tree_util.register_pytree_node(
    Carrier, lambda c: ((c.arrays, c.alongside), c.record), lambda record, kids: Carrier(record, *kids))


def staged(carrier: Carrier) -> bool:
    """True if the program was staged into an enclosing trace instead of run."""
    probe = carrier.arrays[0] if carrier.arrays else next(iter(jax.tree.leaves(carrier.alongside)), None)
    return isinstance(probe, jax.core.Tracer)


def rebuild(entry: SignatureRecord, arrays: list) -> Any:
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
    return restore_order(out, entry.skeleton) if entry.reorder else out
