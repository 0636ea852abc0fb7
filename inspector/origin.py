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

import contextlib
import dataclasses
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from inspector._compat import user_frames
from inspector.model import Inspection, MethodCall
from inspector.names import safe

OriginKind = Literal["op", "input", "unknown"]

MAX_LOOP_STEPS = 100_000
"""A ``while_loop`` stepped into for more iterations than this is reported as itself."""


# -- what an origin says ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Operand:
    """Statistics of one operand (or result) of the origin's operation, computed in float64 on the host.

    ``min``/``max``/``abs_max`` are over the finite elements (None where there are none, or for a non-numeric
    dtype); ``constant``: a literal or constant of the program, not a value computed from the inputs."""

    index: int
    shape: tuple[int, ...]
    dtype: str
    size: int
    min: float | None
    max: float | None
    abs_max: float | None
    nan: int
    posinf: int
    neginf: int
    zeros: int
    constant: bool = False

    @property
    def inf(self) -> int:
        return self.posinf + self.neginf

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf

    @property
    def type_str(self) -> str:
        """``float32[4,16]``."""
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    def summary(self) -> str:
        """``float32[4,16] min 0 max 1.5 |max| 1.5, 3 zeros`` with NaN/Inf counts where there are some."""
        parts = [self.type_str + (" (constant)" if self.constant else "")]
        if self.size == 1 and self.nonfinite == self.size:
            parts.append("= nan" if self.nan else ("= inf" if self.posinf else "= -inf"))
        elif self.min is not None:
            parts.append(f"min {_num(self.min)} max {_num(self.max)} |max| {_num(self.abs_max)}")
        extra = [f"{n} {w}" for n, w in ((self.zeros, "zeros"), (self.nan, "NaN"), (self.posinf, "+Inf"),
                                         (self.neginf, "-Inf")) if n and not (self.size == 1 and w != "zeros")]
        return " ".join(parts) + (", " + ", ".join(extra) if extra else "")


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.6g}"


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where the first NaN/Inf of an inspection was born.

    ``kind``: ``'op'`` (a primitive made it from finite operands), ``'input'`` (it was already in an input of the
    call: ``input_name`` says which) or ``'unknown'`` (``reason`` says why). For an op: ``primitive`` (``'log'``),
    ``file``/``line``/``function`` (the innermost frame of your code, outside jax, flax and inspector; ``frames``
    lists every user frame jax kept, innermost first, as ``file:line (function)``), ``name_stack`` (flax's module
    path, ``'MLP/Dense_1'``), ``inside`` (the bodies stepped into, outermost first: ``'scan iteration 3/8'``),
    ``operands`` and ``results`` (:class:`Operand`). ``call`` is the key of the first non-finite captured call
    (``''`` where there is none).
    """

    kind: OriginKind
    call: str = ""
    primitive: str | None = None
    file: str | None = None
    line: int | None = None
    function: str | None = None
    name_stack: str = ""
    inside: tuple[str, ...] = ()
    operands: tuple[Operand, ...] = ()
    results: tuple[Operand, ...] = ()
    input_name: str | None = None
    frames: tuple[str, ...] = ()
    reason: str | None = None
    params: str = ""

    @property
    def where(self) -> str:
        """``'model.py:42'`` (the file's base name), or ``''`` where jax kept no source information."""
        return f"{os.path.basename(self.file)}:{self.line}" if self.file else ""

    @property
    def found(self) -> bool:
        return self.kind != "unknown"

    def headline(self) -> str:
        """One line: ``log at model.py:42 (MLP/Dense_1): input min 0 -> -inf``."""
        if self.kind == "unknown":
            return safe(f"origin unknown: {self.reason}")
        if self.kind == "input":
            first = self.results[0].summary() if self.results else ""
            return safe(f"input {self.input_name}: already non-finite ({first})")
        where = f" at {self.where}" if self.where else ""
        scope = f" ({self.name_stack})" if self.name_stack else ""
        ins = [o for o in self.operands if o.dtype]
        lhs = "; ".join(("input " if len(ins) == 1 else f"input {o.index}: ") + _brief(o) for o in ins)
        rhs = "; ".join(_brief(o) for o in self.results if o.nonfinite) or "non-finite"
        return safe(f"{self.primitive}{where}{scope}: {lhs} -> {rhs}")

    def to_text(self) -> str:
        """Several lines: the headline, where (every user frame), inside which bodies, each operand and result."""
        lines = [self.headline()]
        if self.call:
            lines.append(f"  first non-finite call: {self.call}")
        if self.kind == "op":
            if self.frames:
                lines.append("  source: " + self.frames[0])
                lines += ["          " + f for f in self.frames[1:4]]
            if self.inside:
                lines.append("  inside: " + " > ".join(self.inside))
            if self.params:
                lines.append("  params: " + self.params)
            lines += [f"  operand {o.index}: {o.summary()}" for o in self.operands]
            lines += [f"  result {o.index}: {o.summary()}" for o in self.results]
        if self.reason and self.kind != "unknown":
            lines.append(f"  note: {self.reason}")
        return "\n".join(safe(line) for line in lines)

    def __str__(self) -> str:
        return self.headline()

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a view (JSON-able): every field, ``where`` and ``headline``, operands as dicts."""
        out = dataclasses.asdict(self)
        out["where"], out["headline"] = self.where, self.headline()
        return out


def _brief(o: Operand) -> str:
    """The part of an operand's statistics that explains a NaN: its extremes or its non-finite values."""
    if o.size == 1:
        return o.summary().split(" ", 1)[1] if " " in o.summary() else o.type_str
    if o.nonfinite:
        bits = [f"{n} {w}" for n, w in ((o.nan, "NaN"), (o.posinf, "+Inf"), (o.neginf, "-Inf")) if n]
        if o.nonfinite == o.size:
            return ", ".join(bits)
        return f"min {_num(o.min)} max {_num(o.max)}, " + ", ".join(bits)
    if o.min is None:
        return o.type_str
    return f"min {_num(o.min)} max {_num(o.max)}"


def describe(x: Any, index: int = 0, constant: bool = False) -> Operand:
    """:class:`Operand` statistics of an array (numpy, float64)."""
    try:
        a = np.asarray(x)
    except Exception:  # noqa: BLE001 - a PRNG key or an opaque value: shape and dtype only
        shape = tuple(getattr(x, "shape", ()))
        return Operand(index, shape, str(getattr(x, "dtype", type(x).__name__)), int(np.prod(shape)),
                       None, None, None, 0, 0, 0, 0, constant)
    dtype = str(getattr(x, "dtype", a.dtype))
    if a.dtype.kind == "c":
        a = np.abs(a.astype(np.complex128))
    elif a.dtype.kind in "biuf" or a.dtype.kind == "V" or dtype in ("bfloat16",) or "float" in dtype:
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            return Operand(index, a.shape, dtype, a.size, None, None, None, 0, 0, 0, 0, constant)
    else:
        return Operand(index, a.shape, dtype, a.size, None, None, None, 0, 0, 0, 0, constant)
    nan = int(np.isnan(a).sum())
    posinf = int(np.isposinf(a).sum())
    neginf = int(np.isneginf(a).sum())
    finite = a[np.isfinite(a)]
    lo = hi = am = None
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        am = max(abs(lo), abs(hi))
    return Operand(index, tuple(a.shape), dtype, int(a.size), lo, hi, am, nan, posinf, neginf,
                   int((a == 0).sum()), constant)


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


def remember(run: Any, insp: Inspection, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Called by an inspected run after it built ``insp``: if a captured call (or the output) holds a NaN or
    Inf, keeps what re-running the call needs on the inspection (and on its first non-finite call)."""
    try:
        call = insp.first_nonfinite()
        if call is None and not any(leaf.nonfinite for leaf in insp.outputs):
            return
        runner = getattr(run, "runner", None)
        reason = None
        if runner is None or getattr(runner, "fn", None) is None or not getattr(runner, "intercepts", False):
            reason = "the origin of a NaN is found for flax.linen runs only"
        from inspector.engine.runner import fresh_containers

        own_args, own_kwargs = fresh_containers((args, kwargs))  # the caller may change its dicts afterwards
        rerun = Rerun(runner, run.kind, own_args, own_kwargs, call, reason)
        insp.__dict__[_ATTR] = rerun
        if call is not None:
            call.__dict__[_ATTR] = rerun
    except Exception:  # noqa: BLE001 - keeping the origin's inputs never fails a call
        return


def origin_of(call: MethodCall) -> Origin | None:
    """:attr:`MethodCall.origin`: the origin of the NaN/Inf if ``call`` is its inspection's first non-finite
    call, else None."""
    rerun = call.__dict__.get(_ATTR) if hasattr(call, "__dict__") else None
    return rerun.origin() if rerun is not None else None


def nonfinite_origin(insp: Inspection) -> Origin | None:
    """:meth:`Inspection.nonfinite_origin`: where the first NaN/Inf was born, or None if the inspection holds
    none (or was not made by an inspected linen run)."""
    rerun = insp.__dict__.get(_ATTR) if hasattr(insp, "__dict__") else None
    return rerun.origin() if rerun is not None else None


def available(obj: Inspection | MethodCall) -> bool:
    """True if an origin can be asked of ``obj`` (an inspection that found a NaN/Inf, or its first non-finite
    call), without computing it: a view can offer it, and compute it (a re-run, seconds on a large model) when
    asked."""
    return _ATTR in getattr(obj, "__dict__", {})


def computed(obj: Inspection | MethodCall) -> Origin | None:
    """The origin of ``obj`` if it was already computed (never re-runs anything), else None."""
    rerun = getattr(obj, "__dict__", {}).get(_ATTR)
    return rerun._origin if rerun is not None else None


__all__ = ["Origin", "Operand", "remember", "origin_of", "nonfinite_origin", "available", "computed"]
