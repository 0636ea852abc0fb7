"""The per-equation counting rules of :mod:`inspector.costs` (those of XLA's ``HloCostAnalysis``, stated in
its docstring): :func:`eqn_cost` gives one jaxpr equation's FLOPs, transcendentals and bytes accessed as a
:class:`_Count`; a primitive without a rule here is lowered alone and counted by XLA (:func:`_by_xla`)."""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

import numpy as np

_FREE = frozenset({
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice", "dynamic_slice",
    "dynamic_update_slice", "concatenate", "pad", "iota", "copy", "copy_p", "rev", "bitcast_convert_type",
    "device_put", "sharding_constraint", "stop_gradient", "optimization_barrier", "name", "pvary",
    "mesh_cast", "reshard", "squeeze_p", "split", "random_wrap", "random_unwrap", "random_seed",
    "random_fold_in_p", "convert_element_type_p", "empty", "tie_in", "debug_callback", "axis_index",
})
_TRANSCENDENTAL = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "atan2", "pow", "sqrt",
    "rsqrt", "cbrt", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
})
_ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "rem", "max", "min", "neg", "abs", "sign", "floor", "ceil", "round",
    "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "select_n", "convert_element_type",
    "clamp", "nextafter", "shift_left", "shift_right_logical", "shift_right_arithmetic", "population_count",
    "is_finite", "square", "add_any", "real", "imag", "conj", "complex", "clz", "reduce_precision",
})
_REDUCE = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                     "reduce_xor"})  # argmax/argmin reduce (value, index) pairs: counted by XLA


def _size(aval: Any) -> int:
    shape = getattr(aval, "shape", ())
    return int(math.prod(shape)) if shape else 1


def _nbytes(aval: Any) -> int:
    dtype = getattr(aval, "dtype", None)
    if dtype is None:
        return 0
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:  # an extended dtype (a typed PRNG key)
        itemsize = getattr(dtype, "itemsize", 0) or 8
    return _size(aval) * itemsize


@dataclasses.dataclass
class _Count:
    flops: float = 0.0
    transcendentals: float = 0.0
    bytes_accessed: float = 0.0

    def add(self, other: _Count, times: float = 1.0) -> None:
        self.flops += other.flops * times
        self.transcendentals += other.transcendentals * times
        self.bytes_accessed += other.bytes_accessed * times


def _conv_flops(eqn: Any) -> float:
    """XLA's ``GetConvolutionFlops``: 2 per multiply-add, over the kernel positions inside the input."""
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    p = eqn.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    out = eqn.outvars[0].aval
    batch = lhs.shape[lhs_spec[0]] // p.get("batch_group_count", 1)
    in_features = lhs.shape[lhs_spec[1]] // p.get("feature_group_count", 1)
    out_features = rhs.shape[rhs_spec[0]]
    strides, padding = p["window_strides"], p["padding"]
    lhs_dil = p.get("lhs_dilation") or (1,) * len(strides)
    rhs_dil = p.get("rhs_dilation") or (1,) * len(strides)
    valid = 1
    for d in range(len(strides)):
        in_size = lhs.shape[lhs_spec[2 + d]]
        k_size = rhs.shape[rhs_spec[2 + d]]
        o_size = out.shape[out_spec[2 + d]]
        o = np.arange(o_size)[:, None] * strides[d] - padding[d][0]
        k = np.arange(k_size)[None, :] * rhs_dil[d]
        idx = o + k
        ok = (idx % lhs_dil[d] == 0) & (idx >= 0) & (idx // lhs_dil[d] < in_size)
        valid *= int(ok.sum())
    return 2.0 * batch * in_features * out_features * valid


def _integer_pow_muls(n: int) -> int:
    """Multiplications jax's lowering of ``x**n`` makes (square-and-multiply; a reciprocal for n < 0)."""
    n = abs(n)
    if n == 0:
        return 0
    muls, acc = 0, False
    while n:
        if n & 1:
            muls += 1 if acc else 0
            acc = True
        n >>= 1
        if n:
            muls += 1
    return muls


_alone: dict[Any, _Count] = {}
_alone_lock = threading.Lock()


def _by_xla(eqn: Any) -> _Count:
    """A primitive without a rule here, lowered alone and counted by XLA (cached per primitive, shapes and
    parameters); zero if it cannot be lowered alone."""
    avals = tuple(v.aval for v in eqn.invars)
    try:
        key: Any = (eqn.primitive, tuple((a.shape, str(a.dtype)) for a in avals),
                    tuple(sorted((k, repr(v)) for k, v in eqn.params.items())))
    except Exception:  # noqa: BLE001 - unhashable parameters: not cached
        key = None
    with _alone_lock:
        found = _alone.get(key) if key is not None else None
    if found is not None:
        return found
    import jax

    count = _Count()
    try:
        def alone(*xs: Any) -> Any:
            return eqn.primitive.bind(*xs, **eqn.params)

        specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
        analysis = jax.jit(alone).lower(*specs).cost_analysis() or {}
        count = _Count(float(analysis.get("flops", 0.0)), float(analysis.get("transcendentals", 0.0)),
                       float(analysis.get("bytes accessed", 0.0)))
    except Exception:  # noqa: BLE001 - a primitive that needs its context (an effect, a collective)
        count = _Count(0.0, 0.0, _io_bytes(eqn))
    if key is not None:
        with _alone_lock:
            _alone[key] = count
    return count


def _io_bytes(eqn: Any) -> float:
    return float(sum(_nbytes(v.aval) for v in eqn.invars) + sum(_nbytes(v.aval) for v in eqn.outvars))


def eqn_cost(eqn: Any) -> _Count:
    """The cost of one first-order equation under the counting rules of the module's docstring."""
    name = eqn.primitive.name
    out = eqn.outvars[0].aval if eqn.outvars else None
    io = _io_bytes(eqn)
    if name in _FREE:
        return _Count(0.0, 0.0, io)
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval
        k = math.prod(lhs.shape[d] for d in lhs_contract) if lhs_contract else 1
        return _Count(2.0 * _size(out) * k, 0.0, io)
    if name == "conv_general_dilated":
        return _Count(_conv_flops(eqn), 0.0, io)
    if name in _TRANSCENDENTAL:
        return _Count(0.0, float(_size(out)), io)
    if name in _ELEMENTWISE:
        return _Count(float(sum(_size(v.aval) for v in eqn.outvars)), 0.0, io)
    if name == "integer_pow":
        n = eqn.params["y"]
        return _Count(float(_size(out) * (_integer_pow_muls(n) + (1 if n < 0 else 0))), 0.0, io)
    if name in _REDUCE:
        return _Count(float(_size(eqn.invars[0].aval)), 0.0, io)
    return _by_xla(eqn)
