"""Programs that summarize in the call trace each large captured array's reductions where flax
captures it, tied to the value by an optimization barrier (``collect.tie_summaries``)."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector import api, stats

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tie is made on the CPU backend only")


class Mixed(nn.Module):
    """Large captures of four dtypes, one of them inside nn.scan (another trace: never tied)."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(64, name="f32")(x)  # (512, 64): 32K elements
        b = nn.Dense(64, dtype=jnp.bfloat16, name="bf16")(h)
        f = nn.Dense(64, dtype=jnp.float16, name="f16")(b)
        i = Ints(name="ints")(f)
        Scanned = nn.scan(Step, variable_broadcast="params", split_rngs={"params": False},
                          variable_axes={"intermediates": 0}, length=2)
        c, _ = Scanned(name="scan")(f.astype(jnp.float32), None)
        small = nn.Dense(3, name="small")(x[:4])
        return c + i.astype(jnp.float32).mean() + small.sum()


class Ints(nn.Module):
    def __call__(self, x):
        return (x.astype(jnp.float32) * 1000).astype(jnp.int32)


class Step(nn.Module):
    @nn.compact
    def __call__(self, c, _):
        return nn.Dense(64)(c), None


def fn(m, x):
    return m(x)


@pytest.fixture(scope="module")
def setup():
    m = Mixed()
    x = jax.random.normal(jax.random.key(1), (512, 16))
    return m, m.init(jax.random.key(0), x), x


def warm(m, v, x, capture=True, keep="arrays"):
    run = fi.inspect_apply(fn, m, capture_intermediates=capture, keep=keep)
    run(v, x)
    run.settle()
    return run, run(v, x)


def test_statistics_of_tied_arrays_are_those_of_the_stored_values(setup):
    m, v, x = setup
    run, insp = warm(m, v, x)
    y, state = nn.apply(fn, m, capture_intermediates=True)(v, x)
    np.testing.assert_array_equal(insp.output, y)
    inter = state["intermediates"]
    held = {"f32": inter["f32"]["__call__"][0], "bf16": inter["bf16"]["__call__"][0],
            "f16": inter["f16"]["__call__"][0], "ints": inter["ints"]["__call__"][0],
            "scan/Dense_0": inter["scan"]["Dense_0"]["__call__"][0]}
    assert all(a.size > stats.summary.SMALL for a in held.values())
    for path, a in held.items():
        st = insp.call(f"{path}:__call__").outputs[0].stats
        want = np.asarray(a, np.float64)
        assert st.count == want.size and st.zeros == int((want == 0).sum()), path
        assert st.min == want.min() and st.max == want.max(), path  # values the array holds
        tol = 2e-5 * (abs(want.mean()) + want.std())  # README: float32 accumulation
        assert abs(st.mean - want.mean()) <= tol and abs(st.std - want.std()) <= tol, path


def test_the_tie_is_in_the_program_and_changes_no_result(setup):
    m, v, x = setup
    run, insp = warm(m, v, x)
    api.forget_shared_runs()  # a run of its own, not the equal one ``warm`` built
    untied = fi.inspect_apply(fn, m, capture_intermediates=True)
    assert untied is not run
    untied.runner.hooks.ties_captures = False
    untied(v, x)
    untied.settle()
    plain = untied(v, x)
    barriers = run.runner.lower(v, x).as_text().count("optimization_barrier")
    assert barriers >= untied.runner.lower(v, x).as_text().count("optimization_barrier") + 4  # f32, bf16, f16, ints
    for a, b in zip(insp.calls, plain.calls):
        assert a.key == b.key
        for la, lb in zip(a.outputs, b.outputs):
            np.testing.assert_array_equal(la.value, lb.value)
            assert la.stats.count == lb.stats.count and la.stats.zeros == lb.stats.zeros
            assert la.stats.min == lb.stats.min and la.stats.max == lb.stats.max


def test_a_users_filter_is_asked_once_per_call_as_flax_asks_it(setup):
    m, v, x = setup
    asked = []

    def f(mod, name):
        asked.append((tuple(mod.path), name))
        return name == "__call__" and tuple(mod.path)[:1] != ("small",)

    nn.apply(fn, m, capture_intermediates=f)(v, x)
    flax_asks = list(asked)
    asked.clear()
    run = fi.inspect_apply(fn, m, capture_intermediates=f)
    run.runner.lower(v, x)  # the program that summarizes in the call, traced once
    assert asked == flax_asks
    _, insp = warm(m, v, x, capture=f)
    assert "small:__call__" not in [c.key for c in insp.calls]
    assert [c.key for c in insp.calls] == [c.key for c in fi.inspect_apply(fn, m, capture_intermediates=f)(v, x).calls]



def test_an_unreadable_capture_stack_warns_once_and_ties_nothing(monkeypatch):
    from flax.linen import module as linen_module

    from inspector import _compat

    monkeypatch.setattr(linen_module, "_context", object())  # flax's private context, moved
    monkeypatch.setattr(_compat, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _compat.capture_filter_in_effect() is None and _compat.capture_filter_in_effect() is None
    assert [w.category for w in caught] == [_compat.CompatWarning]


TABLE = jnp.arange(32768, dtype=jnp.float32).reshape(256, 128)


class Table(nn.Module):
    """Returns a concrete jax array, which the code after it reads as a Python value."""

    def __call__(self):
        return TABLE


class UsesTable(nn.Module):
    @nn.compact
    def __call__(self, x):
        t = Table()()
        scale = 2.0 if float(np.asarray(t)[1, 0]) > 0 else 3.0  # concrete under flax's own jit: must stay so
        return nn.Dense(128)(x) * scale + t[: x.shape[0]]


def test_a_concrete_array_a_module_returns_stays_concrete(setup):
    m = UsesTable()
    x = jnp.ones((256, 16))
    v = m.init(jax.random.key(0), x)
    run, insp = warm(m, v, x)
    y, state = jax.jit(lambda v, x: nn.apply(fn, m, capture_intermediates=True)(v, x))(v, x)
    np.testing.assert_array_equal(insp.output, y)
    stats = insp.call("Table_0:__call__").outputs[0].stats
    assert (stats.min, stats.max, stats.count) == (0.0, 32767.0, 32768)
