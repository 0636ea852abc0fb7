"""``insp.first_nonfinite().origin``: the operation that made the first NaN/Inf, with its line in this file.

The oracle is independent of inspector: each model plants its NaN at a line marked ``# NaN: <tag>`` in this
file, and the expected line is found by reading this file's text."""

from __future__ import annotations

import copy
import os
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector import origin as O
from inspector._compat import user_frames

HERE = os.path.abspath(__file__)


def line_of(tag: str) -> int:
    """The line of this file marked ``# NaN: tag`` (the oracle)."""
    with open(HERE) as f:
        hits = [i for i, text in enumerate(f, 1) if text.rstrip().endswith(f"# NaN: {tag}")]
    assert len(hits) == 1, tag
    return hits[0]


def check_op(o: O.Origin, primitive: str, tag: str) -> None:
    assert o.kind == "op", o.to_text()
    assert o.primitive == primitive, o.to_text()
    assert os.path.abspath(o.file) == HERE and o.line == line_of(tag), o.to_text()
    assert o.where == f"test_origin.py:{line_of(tag)}"
    assert str(o).startswith(f"{primitive} at test_origin.py:{line_of(tag)}")
    assert all(op.nonfinite == 0 for op in o.operands if not op.constant), o.to_text()
    assert any(r.nonfinite for r in o.results), o.to_text()


class LogMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(16)(x))
        return nn.Dense(2)(jnp.log(h))  # NaN: log


def test_log_of_zero_names_the_line_and_the_input_statistics():
    model = LogMLP()
    x = jnp.linspace(-1, 1, 32).reshape(4, 8)
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    first = insp.first_nonfinite()
    assert first.key == "Dense_1:__call__[0]"
    o = first.origin
    check_op(o, "log", "log")
    assert o is insp.nonfinite_origin()  # the same object, computed once
    assert o.call == "Dense_1:__call__[0]" and o.name_stack == "LogMLP"
    h = np.asarray(nn.relu(x @ v["params"]["Dense_0"]["kernel"] + v["params"]["Dense_0"]["bias"]))
    (op,) = o.operands
    assert op.shape == (4, 16) and op.dtype == "float32"
    assert op.min == 0.0 and op.max == pytest.approx(float(h.max())) and op.zeros == int((h == 0).sum())
    assert o.results[0].neginf == int((h == 0).sum()) and o.results[0].nan == 0
    assert "input min 0 max" in str(o) and "-Inf" in str(o)
    assert "operand 0: float32[4,16]" in o.to_text()


class Div(nn.Module):
    @nn.compact
    def __call__(self, x):
        z = nn.Dense(3, kernel_init=nn.initializers.zeros)(x)
        return nn.Dense(2)(z / z)  # NaN: div


def test_zero_over_zero():
    model, x = Div(), jnp.ones((2, 4))
    v = model.init(jax.random.key(0), x)
    o = fi.inspect(model, v, x).first_nonfinite().origin
    check_op(o, "div", "div")
    assert [op.zeros for op in o.operands] == [6, 6] and o.results[0].nan == 6


class Sqrt(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(4)(x)
        y = y - 10.0
        return nn.Dense(1)(jnp.sqrt(y))  # NaN: sqrt


def test_sqrt_of_a_negative():
    model, x = Sqrt(), jnp.ones((2, 3))
    v = model.init(jax.random.key(0), x)
    o = fi.inspect(model, v, x).first_nonfinite().origin
    check_op(o, "sqrt", "sqrt")
    assert o.operands[0].max < 0 and o.results[0].nan == 8


class Exp(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(4, kernel_init=nn.initializers.ones)(x)
        return nn.Dense(1)(jnp.exp(y))  # NaN: exp


def test_exp_overflows_float32():
    model, x = Exp(), jnp.full((2, 3), 40.0)  # exp(120) > float32 max
    v = model.init(jax.random.key(0), x)
    o = fi.inspect(model, v, x).first_nonfinite().origin
    check_op(o, "exp", "exp")
    assert o.operands[0].min == 120.0 and o.results[0].posinf == 8


def test_a_nan_already_in_the_input_is_the_origin():
    model = nn.Dense(3)
    x = jnp.ones((2, 4)).at[1, 2].set(jnp.nan)
    v = model.init(jax.random.key(0), jnp.ones((2, 4)))
    o = fi.inspect(model, v, x).first_nonfinite().origin
    assert o.kind == "input" and o.input_name == "args[0]", o.to_text()
    assert o.results[0].nan == 1 and o.primitive is None
    assert str(o) == "input args[0]: already non-finite (float32[2,4] min 1 max 1 |max| 1, 1 NaN)"


def test_a_nan_in_the_variables_is_named_by_its_path():
    model = nn.Dense(3)
    x = jnp.ones((2, 4))
    v = model.init(jax.random.key(0), x)
    v = {"params": {**v["params"], "bias": v["params"]["bias"].at[0].set(jnp.inf)}}
    o = fi.inspect(model, v, x).first_nonfinite().origin
    assert o.kind == "input" and o.input_name == "variables/params/bias", o.to_text()


class Masked(nn.Module):
    """A log made and masked away before the NaN that reaches the output is made."""

    @nn.compact
    def __call__(self, x):
        safe = jnp.where(x > 0, jnp.log(x), 0.0)  # a -inf made, then masked: not the origin
        y = nn.Dense(3)(safe)
        return nn.Dense(2)(jnp.arcsin(y * 0 + 2.0))  # NaN: arcsin


def test_a_nan_masked_away_is_not_blamed():
    model, x = Masked(), jnp.array([[0.0, 1.0, 2.0]])
    v = model.init(jax.random.key(0), x)
    o = fi.inspect(model, v, x).first_nonfinite().origin
    check_op(o, "asin", "arcsin")


class Cell(nn.Module):
    @nn.compact
    def __call__(self, c, x):
        c = c + nn.Dense(3)(x)
        return c, jnp.log(c)  # NaN: scan body


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        scan = nn.scan(Cell, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
        _, ys = scan()(jnp.zeros((x.shape[0], 3)), x)
        return nn.Dense(2)(ys)


def test_inside_nn_scan_names_the_iteration():
    model = Scanned()
    x = jnp.linspace(-2, 2, 2 * 5 * 4).reshape(2, 5, 4)
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    o = insp.first_nonfinite().origin
    check_op(o, "log", "scan body")
    assert any(s.startswith("scan iteration ") for s in o.inside), o.inside
    # the oracle: the first iteration in which some carry element goes negative
    k, b = v["params"]["ScanCell_0"]["Dense_0"]["kernel"], v["params"]["ScanCell_0"]["Dense_0"]["bias"]
    c, first = np.zeros((2, 3), np.float32), None
    for i in range(5):
        c = c + np.asarray(x[:, i] @ k + b)
        if first is None and (c <= 0).any():
            first = i
    assert f"scan iteration {first}/5" in o.inside, o.inside


def test_inside_lax_scan_in_a_module():
    class LaxScan(nn.Module):
        @nn.compact
        def __call__(self, x):
            def body(c, xi):
                c = c * xi
                return c, jnp.sqrt(c - 3.0)  # NaN: lax scan
            _, ys = jax.lax.scan(body, jnp.ones(()), x)
            return nn.Dense(1)(ys[:, None])

    model, x = LaxScan(), jnp.array([2.0, 2.0, 0.5, 1.0])
    v = model.init(jax.random.key(0), x)
    o = fi.inspect(model, v, x).first_nonfinite().origin
    check_op(o, "sqrt", "lax scan")
    assert "scan iteration 0/4" in o.inside  # c = 2: sqrt(-1)


class Bf16(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(4, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)(x)
        return nn.Dense(2, dtype=jnp.bfloat16)(jnp.log(y - y))  # NaN: bf16


def test_bfloat16():
    model, x = Bf16(), jnp.ones((2, 3), jnp.bfloat16)
    v = model.init(jax.random.key(0), x)
    o = fi.inspect(model, v, x).first_nonfinite().origin
    check_op(o, "log", "bf16")
    assert o.operands[0].dtype == "bfloat16" and o.results[0].neginf == 8


class GradNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4)(x)
        return nn.Dense(1)(jnp.log(h * h - h * h))  # NaN: grad forward


def test_inside_inspect_grads_forward_pass():
    model, x = GradNet(), jnp.ones((2, 3))
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect_grad(lambda m, x: jnp.mean(m(x)), model)(v, x)
    o = insp.first_nonfinite().origin
    check_op(o, "log", "grad forward")


def test_none_without_a_nan_and_only_the_first_call_has_one():
    model = nn.Dense(3)
    x = jnp.ones((2, 4))
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    assert insp.first_nonfinite() is None and insp.nonfinite_origin() is None
    assert all(c.origin is None for c in insp.calls)
    m = LogMLP()
    x = jnp.linspace(-1, 1, 32).reshape(4, 8)
    insp = fi.inspect(m, m.init(jax.random.key(0), x), x)
    assert [c.key for c in insp.calls if c.origin is not None] == ["Dense_1:__call__[0]"]


def test_never_raises_and_keeps_nothing_in_copies():
    model = LogMLP()
    x = jnp.linspace(-1, 1, 32).reshape(4, 8)
    insp = fi.inspect(model, model.init(jax.random.key(0), x), x)
    assert copy.deepcopy(insp.first_nonfinite()).origin.primitive == "log"
    o = pickle.loads(pickle.dumps(insp.first_nonfinite())).origin  # no arrays or functions travel
    assert o.kind == "unknown" and "pickled" in o.reason and str(o).startswith("origin unknown:")
    broken = O.Rerun(None, "apply", (), {}, None)  # nothing to re-run with
    o = broken.origin()
    assert o.kind == "unknown" and "failed" in o.reason
    assert o.to_text().startswith("origin unknown")


def test_the_callers_dict_changed_afterwards_does_not_change_the_origin():
    model = LogMLP()
    x = jnp.linspace(-1, 1, 32).reshape(4, 8)
    v = model.init(jax.random.key(0), x)
    given = {"params": dict(v["params"])}
    insp = fi.inspect(model, given, x)
    given["params"]["Dense_0"] = None
    assert insp.first_nonfinite().origin.primitive == "log"


def test_compat_user_frames_reads_jax_source_info():
    closed = jax.make_jaxpr(lambda x: jnp.sin(x))(1.0)
    frames = user_frames(closed.jaxpr.eqns[0].source_info)
    assert frames and os.path.abspath(frames[0][0]) == HERE and frames[0][2].endswith("<lambda>")


@jax.custom_jvp
def my_log(x):
    return jnp.log(x)  # NaN: custom_jvp


my_log.defjvp(lambda primals, tangents: (my_log(primals[0]), tangents[0] / primals[0]))


class Bodies(nn.Module):
    """A NaN inside jit, custom_jvp, cond and remat bodies, chosen by ``where``."""

    where: str

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3, kernel_init=nn.initializers.zeros)(x)
        if self.where == "jit":
            y = jax.jit(lambda z: jnp.sqrt(z - 1.0))(y)  # NaN: jit
        elif self.where == "custom_jvp":
            y = my_log(y)
        elif self.where == "cond":
            y = jax.lax.cond(y.sum() < 1.0, lambda z: jnp.arccos(z + 2.0), lambda z: z, y)  # NaN: cond
        elif self.where == "remat":
            y = jax.checkpoint(lambda z: jnp.log(z) * 2.0)(y)  # NaN: remat
        elif self.where == "while":
            step = lambda c: (c[0] + 1, jnp.log(c[1] - c[0]))  # NaN: while
            y = jax.lax.while_loop(lambda c: c[0] < 3, step, (0, y))[1]
        return nn.Dense(2)(y)


@pytest.mark.parametrize("where, primitive", [("jit", "sqrt"), ("custom_jvp", "log"), ("cond", "acos"),
                                               ("remat", "log"), ("while", "log")])
def test_bodies_are_stepped_into(where, primitive):
    model, x = Bodies(where), jnp.ones((2, 4))
    v = model.init(jax.random.key(0), x)
    o = fi.inspect(model, v, x).first_nonfinite().origin
    check_op(o, primitive, where)
    assert o.inside, o.to_text()


def test_init_with_output_and_what_a_view_can_ask_without_a_rerun():
    model, x = LogMLP(), jnp.linspace(-1, 1, 32).reshape(4, 8)
    insp = fi.inspect_init_with_output(lambda m, x: m(x), model)(jax.random.key(0), x)
    first = insp.first_nonfinite()
    assert O.available(first) and O.available(insp) and O.computed(first) is None
    check_op(first.origin, "log", "log")
    assert O.computed(insp) is first.origin
    clean = fi.inspect(nn.Dense(2), nn.Dense(2).init(jax.random.key(0), x), x)
    assert not O.available(clean) and O.computed(clean) is None


class Shifted(nn.Module):
    shift: float

    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(jnp.log(jnp.abs(x) + self.shift))  # NaN: shifted


class Deep(nn.Module):
    @nn.compact
    def __call__(self, x):
        for shift in (1.0, 2.0, -1e9, 3.0):
            x = Shifted(shift)(x)
        return x


def test_the_modules_upstream_run_as_one_compiled_program_when_finite(monkeypatch):
    calls = []
    real = O._finite_prefix

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(O, "_finite_prefix", spy)
    model, x = Deep(), jnp.linspace(-1, 1, 12).reshape(3, 4)
    v = model.init(jax.random.key(0), x)
    insp = fi.inspect(model, v, x)
    first = insp.first_nonfinite()
    assert first.key == "Shifted_2/Dense_0:__call__[0]"  # the NaN is born in Shifted_2, before its Dense
    o = first.origin
    check_op(o, "log", "shifted")
    assert o.name_stack == "Deep/Shifted_2" and o.operands[0].max < 0
    (preset, start), = calls  # stepped from Shifted_2's first operation on: what ran before it was finite
    assert preset is not None and start > 0


class LogOfDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(jnp.log(nn.Dense(3)(x)))  # NaN: patched


def test_a_patched_run_and_keep_stats_are_re_run_as_they_ran():
    model, x = LogOfDense(), jnp.ones((2, 4))
    v = model.init(jax.random.key(0), x)
    v = jax.tree.map(jnp.abs, v)  # every Dense output positive: no NaN unpatched
    assert fi.inspect(model, v, x, keep="stats").first_nonfinite() is None
    insp = fi.inspect_apply(lambda m, x: m(x), model, patches={"Dense_1:__call__": fi.zero}, keep="stats")(v, x)
    o = insp.first_nonfinite().origin
    check_op(o, "log", "patched")
    assert o.operands[0].zeros == 6


def test_to_dict_is_json():
    import json

    model = LogMLP()
    x = jnp.linspace(-1, 1, 32).reshape(4, 8)
    o = fi.inspect(model, model.init(jax.random.key(0), x), x).nonfinite_origin()
    d = json.loads(json.dumps(o.to_dict()))
    assert d["primitive"] == "log" and d["where"] == o.where and d["operands"][0]["shape"] == [4, 16]
    assert d["headline"] == str(o)


def test_nnx_says_why_there_is_no_origin():
    from flax import nnx

    class M(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(3, 2, rngs=rngs)

        def __call__(self, x):
            return jnp.log(self.lin(x) * 0)

    o = fi.inspect_nnx(M(nnx.Rngs(0)), jnp.ones((2, 3))).nonfinite_origin()
    assert o.kind == "unknown" and "flax.linen" in o.reason
