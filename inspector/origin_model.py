"""What an origin says: :class:`Origin`, the operation (or input) where the first NaN/Inf of an inspected call
was born, and :class:`Operand`, the statistics of one of its operands or results (:func:`describe`). Plain
frozen dataclasses; :mod:`inspector.origin` finds them."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

import numpy as np

from inspector.names import safe

OriginKind = Literal["op", "input", "unknown"]


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
