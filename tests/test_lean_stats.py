"""keep='stats' after the first call: the captured arrays are not even returned on the device;
a summary that can't be trusted sends the call through a program that returns them."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inspector as fi
from inspector import _compat


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(64, name="hidden")(x)
        return nn.Dense(8, name="head")(jnp.tanh(h))


def fn(m, x):
    return m(x)


@pytest.fixture(scope="module")
def setup():
    m = Net()
    x = jax.random.normal(jax.random.key(1), (512, 16))  # hidden: 32K elements, above stats.summary.SMALL
    return m, m.init(jax.random.key(0), x), x


def warm_stats_run(m, v, x, fun=fn):
    run = fi.inspect_apply(fun, m, capture_intermediates=True, keep="stats")
    run(v, x)
    run.settle()
    run(v, x)
    return run


def numpy_stats(a) -> dict:
    a = np.asarray(a, np.float64).ravel()
    f = a[np.isfinite(a)]
    return {"nan": int(np.isnan(a).sum()), "posinf": int((a == np.inf).sum()), "neginf": int((a == -np.inf).sum()),
            "min": f.min(), "max": f.max(), "mean": f.mean(), "std": f.std()}


def assert_matches(stats, a) -> None:
    want = numpy_stats(a)
    for k in ("nan", "posinf", "neginf"):
        assert getattr(stats, k) == want[k], k
    for k in ("min", "max", "mean", "std"):
        assert getattr(stats, k) == pytest.approx(want[k], rel=1e-5, abs=1e-6), k


def assert_same_output(a, b) -> None:
    """Equal on the CPU; on a GPU, two programs may round matmuls differently (TF32)."""
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3)


def test_a_warm_stats_call_returns_no_captured_array(setup):
    m, v, x = setup
    run = warm_stats_run(m, v, x)
    _, (words, deltas, dropped, packed), _, cached = run.runner.run((v, x), {})
    assert cached and dropped is None and packed == []
    arrays = fi.inspect_apply(fn, m, capture_intermediates=True, keep="arrays")
    arrays(v, x)
    arrays.settle()
    assert arrays.runner.run((v, x), {})[1][2] == []  # keep='arrays' returns them as the result


def test_an_untrusted_summary_runs_the_call_again_with_the_arrays_and_stays_there(setup):
    m, v, x = setup
    run = warm_stats_run(m, v, x)
    lean, traces = run.runner, run.traces
    bad = x.at[:7, 3].set(jnp.nan)
    insp = run(v, bad)
    _, state = nn.apply(fn, m, capture_intermediates=True)(v, bad)
    for name, held in (("hidden", state["intermediates"]["hidden"]["__call__"][0]),
                       ("", state["intermediates"]["__call__"][0])):
        stats = insp.call(f"{name}:__call__").outputs[0].stats
        assert_matches(stats, held)
    assert np.isnan(state["intermediates"]["head"]["__call__"][0]).any()
    assert_matches(insp.call("head:__call__").outputs[0].stats, state["intermediates"]["head"]["__call__"][0])
    assert run.runner is not lean and run.traces == traces + 1
    assert_same_output(insp.output, nn.apply(fn, m)(v, bad))
    again = run(v, bad)  # no third program, no second run
    assert run.traces == traces + 1
    assert again.call("head:__call__").outputs[0].stats.nan == insp.call("head:__call__").outputs[0].stats.nan
    assert not again.call("head:__call__").outputs[0].kept


def test_a_program_with_side_effects_is_never_run_twice(setup):
    m, v, x = setup
    seen = []

    def loud(mod, x):
        jax.debug.callback(lambda: seen.append(1))
        return mod(x)

    run = warm_stats_run(m, v, x, loud)
    assert run.runner.run((v, x), {})[1][2] != []  # returned: the redo needs no second run
    jax.effects_barrier()
    seen.clear()
    insp = run(v, x.at[:7, 3].set(jnp.nan))
    jax.effects_barrier()
    assert seen == [1] and insp.call("head:__call__").outputs[0].stats.nan > 0


def test_gradient_inspections_redo_through_the_same_path(setup):
    m, v, x = setup

    def loss(mod, x):
        return jnp.nansum(mod(x))

    run = fi.inspect_grad(loss, m, keep="stats")
    run(v, x)
    run.settle()
    run(v, x)
    bad = x.at[:7, 3].set(jnp.nan)
    insp = run(v, bad)
    _, state = nn.apply(fn, m, capture_intermediates=True)(v, bad)
    assert_matches(insp.call("head:__call__").outputs[0].stats, state["intermediates"]["head"]["__call__"][0])


def test_traced_effects_sees_effects_in_nested_programs():
    found = []

    def f(x, loud):
        if loud:
            jax.lax.scan(lambda c, _: (jax.debug.print("{}", c) or c, None), x, None, length=1)
        found.append(_compat.traced_effects())
        return x + 1

    jax.jit(f, static_argnums=1)(1.0, False)
    jax.jit(f, static_argnums=1)(1.0, True)
    assert found == [False, True]


def test_traced_effects_says_true_once_warned_when_it_cannot_read_the_trace(monkeypatch):
    monkeypatch.setattr(_compat, "_current_trace", lambda: object())
    monkeypatch.setattr(_compat, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _compat.traced_effects() and _compat.traced_effects()
    assert len([w for w in caught if issubclass(w.category, _compat.CompatWarning)]) == 1


class Wide(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(64, name="hidden")(x)
        return nn.Dense(64, name="head")(jnp.tanh(h))  # 32K elements: summarized where produced


def test_a_value_captured_at_two_places_is_described_once(setup, monkeypatch):
    """The root module returns its head's result: flax captures that one value twice. It is
    summarized once in the call and described once after the first call, and both places
    show the same statistics, those of the value flax returns."""
    from inspector import stats
    from inspector.inspection import variables

    _, _, x = setup
    m = Wide()
    v = m.init(jax.random.key(0), x)
    tied, described = [], []
    summary_fields, describe_exactly = stats.summary_fields, variables.describe_exactly

    def fields(a):
        f = summary_fields(a)
        if f is not None:
            tied.append(a.shape)
        return f

    monkeypatch.setattr(stats, "summary_fields", fields)
    monkeypatch.setattr(variables, "describe_exactly",
                        lambda arrays, hist=True: described.append(len(arrays)) or describe_exactly(arrays, hist))
    _, state = nn.apply(fn, m, capture_intermediates=True)(v, x)
    held = state["intermediates"]
    for keep in ("arrays", "stats"):
        tied.clear()
        described.clear()
        run = fi.inspect_apply(fn, m, capture_intermediates=True, keep=keep)
        first = run(v, x)
        if keep == "arrays":  # kept arrays are described when first read
            assert described == [4]  # the variables only
            first.calls  # noqa: B018
        assert described[-1] == 2  # hidden's and head's (also the root's result and the call's output)
        run.settle()
        warm = run(v, x)
        assert tied == ([(512, 64)] * 2 if jax.default_backend() == "cpu" else [])  # hidden's and head's
        for insp in (first, warm):
            root, head = insp.call(":__call__").outputs[0], insp.call("head:__call__").outputs[0]
            assert root.stats == head.stats
            assert_matches(head.stats, held["head"]["__call__"][0])
            assert_matches(insp.call("hidden:__call__").outputs[0].stats, held["hidden"]["__call__"][0])
            if keep == "arrays":
                np.testing.assert_array_equal(root.fetch(), held["__call__"][0])
                np.testing.assert_array_equal(head.fetch(), held["head"]["__call__"][0])
