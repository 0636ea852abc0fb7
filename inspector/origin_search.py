"""Finding an origin: a jaxpr evaluated equation by equation on the device (:class:`_Search`), keeping a birth
for every non-finite value, and the helpers that bound the work (:func:`_needed`, the equations the target
depends on; :func:`_module_starts` and :func:`_finite_prefix`, the finite part before the call's module run as
one compiled program). :mod:`inspector.origin` re-runs the call and asks this search."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inspector._compat import user_frames
from inspector.origin_model import Origin, describe

MAX_LOOP_STEPS = 100_000
"""A ``while_loop`` stepped into for more iterations than this is reported as itself."""


# -- finding it: a birth for every non-finite value ---------------------------------------
@dataclasses.dataclass(frozen=True)
class _Birth:
    """Where one non-finite value came from; ``seq`` orders births by when they happened."""

    seq: int
    make: Callable[[], Origin]


def _inexact(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    try:
        return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)
    except TypeError:  # an extended dtype (PRNG keys)
        return False


def _has_nonfinite(x: Any) -> bool:
    if not _inexact(x) or getattr(x, "size", 1) == 0:
        return False
    if isinstance(x, np.ndarray) or jax.default_backend() == "cpu":
        return not bool(np.isfinite(np.asarray(x)).all())
    return not bool(jnp.isfinite(x).all())


_STEPPABLE = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
              "custom_vjp_call_jaxpr", "remat2", "checkpoint", "remat", "cond", "while", "scan"}


class _Search:
    """Evaluates a jaxpr equation by equation, keeping a :class:`_Birth` for every non-finite value."""

    def __init__(self, call_key: str):
        self.call_key = call_key
        self._seq = itertools.count()
        self.births: list[_Birth] = []  # every birth, in the order they happened
        self.notes: list[str] = []
        self._scopes: list[str] = []  # the name stacks of the equations stepped into (a body's are relative)

    def _new(self, make: Callable[[], Origin]) -> _Birth:
        b = _Birth(next(self._seq), make)
        self.births.append(b)
        return b

    def input_birth(self, name: str, value: Any) -> _Birth:
        result = describe(value)
        return self._new(lambda: Origin("input", self.call_key, input_name=name, results=(result,)))

    def op_birth(self, eqn: Any, invals: Sequence[Any], outs: Sequence[Any], consts: Sequence[bool],
                 inside: tuple[str, ...]) -> _Birth:
        operands = tuple(describe(v, i, c) for i, (v, c) in enumerate(zip(invals, consts)))
        results = tuple(describe(v, i) for i, v in enumerate(outs))
        frames = [f for f in user_frames(eqn.source_info) if not _inspector_file(f[0])]
        own = next((f for f in frames if not _library(f[0])), frames[0] if frames else None)
        name_stack = "/".join(s for s in self._scopes + [_name_stack(eqn)] if s)
        params = _params(eqn)

        def make() -> Origin:
            return Origin("op", self.call_key, eqn.primitive.name, own[0] if own else None, own[1] if own else None,
                          own[2] if own else None, name_stack, inside, operands, results,
                          frames=tuple(f"{f[0]}:{f[1]} ({f[2]})" for f in frames), params=params)

        return self._new(make)

    # -- evaluation -------------------------------------------------------------------
    def run(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], births: Sequence[_Birth | None],
            inside: tuple[str, ...], needed: set[int] | None = None,
            preset: dict[Any, Any] | None = None, start: int = 0) -> tuple[list[Any], list[_Birth | None]]:
        """``jaxpr`` (an open jaxpr) on ``consts`` and ``args`` whose births are ``births``: its outputs and
        theirs. ``needed``: the indices of the equations to evaluate (the others are skipped); ``preset``: values
        of variables already computed (all finite), whose equations are skipped."""
        from jax.extend.core import Literal

        env: dict[Any, Any] = {}
        born: dict[Any, _Birth] = {}
        const_vars = set()
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c
            const_vars.add(v)
        for v, a, b in zip(jaxpr.invars, args, births):
            env[v] = a
            if b is not None:
                born[v] = b

        def read(v: Any) -> Any:
            return v.val if isinstance(v, Literal) else env[v]

        if preset:
            env.update(preset)
        for i, eqn in enumerate(jaxpr.eqns):
            if needed is not None and i not in needed:
                continue
            if preset is not None and i < start:
                continue
            invals = [read(v) for v in eqn.invars]
            in_births = [born.get(v) for v in eqn.invars if not isinstance(v, Literal)]
            outs = _bind(eqn, invals)
            flags = [_has_nonfinite(o) for o in outs]
            out_births: list[_Birth | None] = [None] * len(outs)
            if any(flags):
                known = [b for b in in_births if b is not None]
                stepped = self._step(eqn, invals, [born.get(v) if not isinstance(v, Literal) else None
                                                   for v in eqn.invars], inside)
                earliest = min(known, key=lambda b: b.seq) if known else None
                fresh: _Birth | None = None
                for j, bad in enumerate(flags):
                    if not bad:
                        continue
                    if stepped is not None and stepped[1][j] is not None:
                        out_births[j] = stepped[1][j]
                    elif earliest is not None:
                        out_births[j] = earliest
                    else:
                        if fresh is None:
                            consts_mask = [isinstance(v, Literal) or v in const_vars for v in eqn.invars]
                            fresh = self.op_birth(eqn, invals, outs, consts_mask, inside)
                        out_births[j] = fresh
            for v, o, b in zip(eqn.outvars, outs, out_births):
                env[v] = o
                if b is not None:
                    born[v] = b
        outs_at = [v.val if isinstance(v, Literal) else env.get(v) for v in jaxpr.outvars]  # None: not needed
        return outs_at, [born.get(v) if not isinstance(v, Literal) else None
                                                  for v in jaxpr.outvars]

    def _closed(self, closed: Any, args: Sequence[Any], births: Sequence[_Birth | None],
                inside: tuple[str, ...]) -> tuple[list[Any], list[_Birth | None]]:
        return self.run(closed.jaxpr, closed.consts, args, births, inside)

    def _step(self, eqn: Any, invals: list[Any], births: list[_Birth | None],
              inside: tuple[str, ...]) -> tuple[list[Any], list[_Birth | None]] | None:
        """Steps into ``eqn``'s body: its outputs and their births, or None for a primitive with no body
        this knows how to step into (it is then the origin itself)."""
        name = eqn.primitive.name
        if name not in _STEPPABLE:
            return None
        self._scopes.append(_name_stack(eqn))
        try:
            return self._step_into(name, eqn.params, invals, births, inside)
        finally:
            self._scopes.pop()

    def _step_into(self, name: str, p: Any, invals: list[Any], births: list[_Birth | None],
                   inside: tuple[str, ...]) -> tuple[list[Any], list[_Birth | None]] | None:
        try:
            if name in ("pjit", "jit"):
                return self._closed(p["jaxpr"], invals, births, inside + (f"jit({p.get('name', '')})",))
            if name in ("closed_call", "core_call"):
                body = p["call_jaxpr"]
                if hasattr(body, "consts"):
                    return self._closed(body, invals, births, inside + (name,))
                return self.run(body, (), invals, births, inside + (name,))
            if name in ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):
                body = p.get("call_jaxpr", p.get("fun_jaxpr"))
                return self._closed(body, invals, births, inside + (name,))
            if name in ("remat2", "checkpoint", "remat"):
                return self.run(p["jaxpr"], (), invals, births, inside + ("checkpoint",))
            if name == "cond":
                branches = p["branches"]
                index = int(np.clip(int(np.asarray(invals[0])), 0, len(branches) - 1))
                return self._closed(branches[index], invals[1:], births[1:], inside + (f"cond branch {index}",))
            if name == "while":
                return self._while(p, invals, births, inside)
            if name == "scan":
                return self._scan(p, invals, births, inside)
        except Exception as e:  # noqa: BLE001 - the body could not be stepped into: the eqn is reported itself
            self.notes.append(f"could not step into {name}: {type(e).__name__}: {e}")
        return None

    def _while(self, p: dict[str, Any], invals: list[Any], births: list[_Birth | None],
               inside: tuple[str, ...]) -> tuple[list[Any], list[_Birth | None]] | None:
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cconsts, bconsts, carry = invals[:cn], invals[cn:cn + bn], list(invals[cn + bn:])
        cb, bb, carry_b = births[:cn], births[cn:cn + bn], list(births[cn + bn:])
        for i in range(MAX_LOOP_STEPS):
            go, _ = self._closed(p["cond_jaxpr"], list(cconsts) + carry, list(cb) + carry_b, inside + ("while cond",))
            if not bool(np.asarray(go[0])):
                return list(cconsts) + list(bconsts) + carry, [None] * (cn + bn) + carry_b
            carry, carry_b = self._closed(p["body_jaxpr"], list(bconsts) + carry, list(bb) + carry_b,
                                          inside + (f"while iteration {i}",))
        return None

    def _scan(self, p: dict[str, Any], invals: list[Any], births: list[_Birth | None],
              inside: tuple[str, ...]) -> tuple[list[Any], list[_Birth | None]]:
        nc, ncarry, length = p["num_consts"], p["num_carry"], p["length"]
        consts, carry, xs = invals[:nc], list(invals[nc:nc + ncarry]), invals[nc + ncarry:]
        cb, carry_b, xb = births[:nc], list(births[nc:nc + ncarry]), births[nc + ncarry:]
        body = p["jaxpr"]
        n_ys = len(body.jaxpr.outvars) - ncarry
        ys: list[list[Any]] = [[None] * length for _ in range(n_ys)]
        ys_b: list[_Birth | None] = [None] * n_ys
        order = range(length - 1, -1, -1) if p.get("reverse") else range(length)
        for i in order:
            x_i = [x[i] for x in xs]
            outs, out_b = self._closed(body, list(consts) + carry + x_i, list(cb) + carry_b + list(xb),
                                       inside + (f"scan iteration {i}/{length}",))
            carry, carry_b = outs[:ncarry], out_b[:ncarry]
            for k in range(n_ys):
                ys[k][i] = outs[ncarry + k]
                b = out_b[ncarry + k]
                if b is not None and (ys_b[k] is None or b.seq < ys_b[k].seq):  # type: ignore[union-attr]
                    ys_b[k] = b
        stacked = [jnp.stack(y) if length else None for y in ys]
        return carry + stacked, carry_b + ys_b


def _name_stack(eqn: Any) -> str:
    """flax's module path where ``eqn`` was traced (``'MLP/Dense_1'``, ``'AE/AE.encode/enc'`` in a method),
    relative to the body the equation is in."""
    return str(getattr(eqn.source_info, "name_stack", "") or "")


def _bind(eqn: Any, invals: list[Any]) -> list[Any]:
    """``eqn`` evaluated on ``invals`` (as :func:`jax.core.eval_jaxpr` does)."""
    got = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = got if isinstance(got, tuple) else ((), got)  # jax 0.10.2: params, subfuns among them
    manager = getattr(getattr(eqn, "ctx", None), "manager", None)
    with manager if manager is not None else contextlib.nullcontext():
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _params(eqn: Any) -> str:
    """The small parameters of an equation (``axes=(1,)``), for the text; bodies and large values left out."""
    out = []
    for k, v in eqn.params.items():
        if isinstance(v, (bool, int, float, str, tuple)) or v is None:
            text = repr(v)
            if len(text) <= 40 and v not in (None, ()):
                out.append(f"{k}={text}")
    return ", ".join(out[:6])


_LIBRARY_ROOTS: tuple[str, ...] | None = None


def _library(filename: str) -> bool:
    """True for a file of flax, jax, numpy or inspector (not the user's code)."""
    global _LIBRARY_ROOTS
    if _LIBRARY_ROOTS is None:
        import flax

        roots = [os.path.dirname(os.path.abspath(m.__file__ or "")) for m in (flax, jax, np)]
        roots.append(os.path.dirname(os.path.abspath(__file__)))
        _LIBRARY_ROOTS = tuple(r + os.sep for r in roots)
    return os.path.abspath(filename).startswith(_LIBRARY_ROOTS)


def _inspector_file(filename: str) -> bool:
    return os.path.abspath(filename).startswith(os.path.dirname(os.path.abspath(__file__)) + os.sep)


def _module_starts(jaxpr: Any, needed: set[int], path: tuple[str, ...]) -> list[int]:
    """For the module at ``path`` and each module it is inside, the index of its first equation (of those
    ``needed``), read from flax's name stack (``'Root/blocks_6/ln1'``; a method's label, ``'Root.encode'``, is
    left out); ascending, without 0."""
    starts = set()
    stacks = {i: tuple(p for p in _name_stack(jaxpr.eqns[i]).split("/") if "." not in p)[1:] for i in needed}
    for depth in range(1, len(path) + 1):
        first = next((i for i in sorted(needed) if stacks[i][:depth] == path[:depth]), 0)
        if first:
            starts.add(first)
    return sorted(starts)


def _finite_prefix(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], needed: set[int],
                   starts: list[int]) -> tuple[dict[Any, Any] | None, int]:
    """The equations before the last of ``starts`` (of those ``needed``) run as one compiled program, which
    returns whether each made a NaN/Inf and the values the equations from each start on read. Returns those
    values and the latest start before which nothing was non-finite (``(None, 0)`` if none): the search steps
    through the equations from there. The only compile an origin needs; without it every operation upstream
    of the module would be dispatched alone."""
    from jax.extend.core import Literal

    end = starts[-1]
    order = [i for i in sorted(needed) if i < end]
    eqns = [jaxpr.eqns[i] for i in order]
    made_at: dict[Any, int] = {v: i for i in order for v in jaxpr.eqns[i].outvars}
    reads: list[tuple[int, Any]] = [(i, v) for i in sorted(needed) for v in jaxpr.eqns[i].invars
                                    if not isinstance(v, Literal)]
    reads += [(len(jaxpr.eqns), v) for v in jaxpr.outvars if not isinstance(v, Literal)]
    live = list(dict.fromkeys(v for i, v in reads if v in made_at and any(made_at[v] < s <= i for s in starts)))

    def prefix(consts: list[Any], args: list[Any]) -> tuple[list[Any], Any]:
        env: dict[Any, Any] = dict(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))
        flags = []
        for e in eqns:
            outs = _bind(e, [v.val if isinstance(v, Literal) else env[v] for v in e.invars])
            env.update(zip(e.outvars, outs))
            bad = [jnp.any(~jnp.isfinite(o)) for o in outs if _inexact(o)]
            flags.append(jnp.stack(bad).any() if bad else jnp.array(False))
        return [env[v] for v in live], (jnp.stack(flags) if flags else jnp.zeros(0, bool))

    values, flags = jax.jit(prefix)(list(consts), list(args))
    flags = np.asarray(flags)
    first_bad = order[int(np.argmax(flags))] if flags.any() else end
    start = max((s for s in starts if s <= first_bad), default=0)
    if not start:
        return None, 0
    return dict(zip(live, values)), start


def _needed(jaxpr: Any, targets: Sequence[Any]) -> set[int]:
    """Indices of the equations whose outputs ``targets`` depend on."""
    from jax.extend.core import Literal

    want = {v for v in targets if not isinstance(v, Literal)}
    out: set[int] = set()
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if any(v in want for v in eqn.outvars):
            out.add(i)
            want.update(v for v in eqn.invars if not isinstance(v, Literal))
    return out
