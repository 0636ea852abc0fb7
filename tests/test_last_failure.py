"""``fi.last_failure()``: what ran before a failure, the failing call, and expected vs given variables.

Oracles: flax's own error for the same call (type and message), shapes written out by hand, golden text."""

from __future__ import annotations

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector import failure


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(16)(x))


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = Block()(x)
        h = nn.Dense(8)(h)
        return nn.Dense(2)(h)


fn = lambda m, x: m(x)
X = jnp.ones((4, 8))
V = Net().init(jax.random.key(0), X)


@pytest.fixture(autouse=True)
def _fresh():
    failure.forget()
    yield
    failure.forget()


def flax_error(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_missing_params_golden():
    given = {"params": {k: w for k, w in V["params"].items() if k != "Dense_1"}}
    ours = flax_error(lambda: fi.apply(fn, Net())(given, X))
    theirs = flax_error(lambda: Net().apply(given, X))
    assert type(ours) is type(theirs) is flax.errors.ScopeParamNotFoundError and str(ours) == str(theirs)
    assert "inspector: raised in module 'Dense_1' (Dense), method '__call__'" in ours.__notes__
    got = fi.last_failure()
    assert isinstance(got, fi.Failure)
    assert str(got) == GOLDEN_MISSING, str(got)
    assert got.failing_call.key == "Dense_1:__call__" and got.failing_call.inputs == ("float32[4,8]",)
    assert [c.key for c in got.completed] == ["Block_0:__call__", "Block_0/Dense_0:__call__", "Dense_0:__call__"]
    assert [(c.inputs, c.outputs) for c in got.completed] == [
        (("float32[4,8]",), ("float32[4,16]",)), (("float32[4,8]",), ("float32[4,16]",)),
        (("float32[4,16]",), ("float32[4,8]",))]


GOLDEN_MISSING = """\
Failure: apply Net raised ScopeParamNotFoundError
  Could not find parameter named "kernel" in scope "/Dense_1". (https://flax.readthedocs.io/en/latest/api_reference/flax.errors.html#flax.errors.ScopeParamNotFoundError)
Completed calls, in execution order (3):
  1. Block_0:__call__ (Block)  in: float32[4,8]  out: float32[4,16]
  2. Block_0/Dense_0:__call__ (Dense)  in: float32[4,8]  out: float32[4,16]
  3. Dense_0:__call__ (Dense)  in: float32[4,16]  out: float32[4,8]
Failing call:
  Dense_1:__call__ (Dense)  in: float32[4,8]
  inside /:__call__ (Net)  in: float32[4,8]
Variables, expected (as init creates them) vs given: 2 of 6 differ
  path                           expected       given
  params/Block_0/Dense_0/bias    float32[16]    float32[16]
  params/Block_0/Dense_0/kernel  float32[8,16]  float32[8,16]
  params/Dense_0/bias            float32[8]     float32[8]
  params/Dense_0/kernel          float32[16,8]  float32[16,8]
  params/Dense_1/bias            float32[2]     -              missing
  params/Dense_1/kernel          float32[8,2]   -              missing"""


def test_shape_mismatch_in_inspect_side_by_side():
    x = jnp.ones((4, 5))
    ours = flax_error(lambda: fi.inspect(Net(), V, x))
    theirs = flax_error(lambda: Net().apply(V, x))
    assert type(ours) is type(theirs) is flax.errors.ScopeParamShapeError and str(ours) == str(theirs)
    got = fi.last_failure()
    assert got.kind == "apply" and got.completed == []
    assert [c.key for c in got.failing] == ["Block_0/Dense_0:__call__", "Block_0:__call__", "/:__call__"]
    assert all(c.inputs == ("float32[4,5]",) for c in got.failing)
    rows = {r.path: r for r in got.variables}
    assert (rows["params/Block_0/Dense_0/kernel"].expected, rows["params/Block_0/Dense_0/kernel"].given,
            rows["params/Block_0/Dense_0/kernel"].status) == ("float32[5,16]", "float32[8,16]", "differs")
    assert [r.path for r in got.variables if r.status != "same"] == ["params/Block_0/Dense_0/kernel"]
    assert "params/Block_0/Dense_0/kernel  float32[5,16]  float32[8,16]  differs" in str(got)


def test_unexpected_variables_are_listed():
    given = {"params": {**V["params"], "Extra": {"w": jnp.zeros(3)}}}
    given["params"]["Dense_0"] = {"kernel": jnp.zeros((3, 8)), "bias": jnp.zeros(8)}
    flax_error(lambda: fi.Inspector(Net()).apply(given, X))
    rows = {r.path: r.status for r in fi.last_failure().variables}
    assert rows["params/Extra/w"] == "unexpected" and rows["params/Dense_0/kernel"] == "differs"


class Raises(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4)(x)
        if h.shape[-1] == 4:
            raise ValueError("bad width")
        return h


def test_a_users_error_in_init_and_inspect_grad():
    x = jnp.ones((2, 3))
    ours = flax_error(lambda: fi.init(fn, Raises())(jax.random.key(0), x))
    assert type(ours) is ValueError and str(ours) == "bad width"
    got = fi.last_failure()
    assert got.kind == "init" and got.variables is None
    assert [c.key for c in got.completed] == ["Dense_0:__call__"] and got.failing_call.key == "/:__call__"
    assert str(got).splitlines()[:2] == ["Failure: init Raises raised ValueError", "  bad width"]
    v = nn.Dense(4).init(jax.random.key(0), x)
    failure.forget()
    with pytest.raises(ValueError, match="bad width"):
        fi.inspect_grad(lambda m, x: jnp.sum(m(x)), Raises())({"params": {"Dense_0": v["params"]}}, x)
    assert fi.last_failure().failing_call.key == "/:__call__"
    failure.forget()
    with pytest.raises(ValueError, match="bad width"):
        fi.init_with_output(fn, Raises())(jax.random.key(0), x)
    assert fi.last_failure().kind == "init_with_output"


def test_success_records_nothing_and_a_failure_stays_until_the_next():
    fi.apply(fn, Net())(V, X)
    fi.inspect(Net(), V, X)
    assert fi.last_failure() is None
    flax_error(lambda: fi.apply(fn, Net())(V, jnp.ones((4, 5))))
    first = fi.last_failure()
    fi.apply(fn, Net())(V, X)
    assert fi.last_failure() is first


def test_capture_never_raises_or_changes_the_error():
    err = ValueError("x")
    failure.capture(object(), (), {}, err)  # a runner it cannot re-trace
    got = fi.last_failure()
    assert got.error_type == "ValueError" and got.notes and str(err) == "x" and not getattr(err, "__notes__", None)
    assert "Failing call: none" in str(got)


def test_inside_a_users_jit_the_error_is_flax_own():
    def f(x):
        return fi.apply(fn, Net())(V, x)

    ours = flax_error(lambda: jax.jit(f)(jnp.ones((4, 5))))
    assert isinstance(ours, flax.errors.ScopeParamShapeError)
    assert fi.last_failure().failing_call.key == "Block_0/Dense_0:__call__"


class Cell(nn.Module):
    @nn.compact
    def __call__(self, c, x):
        y = nn.Dense(3)(x)
        return c + y, jnp.dot(y, jnp.ones((4, 2)))  # 3 vs 4: raises while nn.scan traces the body


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        scan = nn.scan(Cell, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
        return scan()(jnp.zeros((2, 3)), x)


def test_a_failure_inside_nn_scan_names_the_body():
    x = jnp.ones((2, 5, 4))
    ours = flax_error(lambda: fi.init(fn, Scanned())(jax.random.key(0), x))
    theirs = flax_error(lambda: Scanned().init(jax.random.key(0), x))
    assert type(ours) is type(theirs) is TypeError and str(ours) == str(theirs)
    got = fi.last_failure()
    assert [c.key for c in got.completed] == ["Dense_0:__call__"]
    assert [(c.key, c.module_type, c.inputs) for c in got.failing] == [
        ("ScanCell_0:__call__", "Cell", ("float32[2,3]", "float32[2,4]")),
        ("/:__call__", "Scanned", ("float32[2,5,4]",))]


def test_exported():
    assert fi.last_failure is failure.last_failure and {"last_failure", "Failure", "Origin"} <= set(fi.__all__)
