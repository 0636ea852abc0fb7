"""Jitted once per signature: same shapes/dtypes/flags/filter do not re-trace."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector import capture as C
from models import MLP, ae_setup


def test_same_signature_traces_once():
    model, variables, x = ae_setup()
    run = fi.apply(lambda m, x: m(x), model, mutable=["batch_stats"], capture_intermediates=C.types(nn.Dense))
    for _ in range(5):
        run(variables, x)
    assert run.traces == 1 and run.compiles == 1
    run(variables, x + 1)  # new values, same shapes
    assert run.traces == 1
    run(variables, jnp.ones((4, 5)))  # new shape
    assert run.traces == 2
    run(variables, jnp.ones((4, 5), jnp.bfloat16))  # new dtype
    assert run.traces == 3
    run(variables, x)
    assert run.traces == 3


def test_python_flags_are_static():
    model = MLP()
    x = jnp.ones((2, 3))
    variables = nn.init(lambda m, x: m(x), model)(jax.random.key(0), x)
    run = fi.apply(lambda m, x, train: m(x, train=train), model)
    key = jax.random.key(1)
    a = run(variables, x, True, rngs={"dropout": key})
    b = run(variables, x, False, rngs={"dropout": key})
    run(variables, x, True, rngs={"dropout": jax.random.key(2)})
    run(variables, x, train=False, rngs={"dropout": key})
    assert run.traces == 3  # True, False positional; False as keyword is another signature
    assert not jnp.allclose(a, b)


def test_inspect_traces_once_and_reports_cached_timings():
    model, variables, x = ae_setup()
    run = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"])
    first = run(variables, x)
    second = run(variables, x)
    assert run.traces == 1
    assert not first.timings.cached and first.timings.compile_ms > 0
    assert second.timings.cached and second.timings.compile_ms == 0 and second.timings.trace_ms == 0


def test_frozendict_flag_is_part_of_the_key():
    model, variables, x = ae_setup()
    run = fi.apply(lambda m, x: m(x), model, mutable=["batch_stats"])
    assert type(run(variables, x)[1]) is dict
    with flax.config.temp_flip_flag("return_frozendict", True):
        assert isinstance(run(variables, x)[1], flax.core.FrozenDict)
    assert run.traces == 2


def test_inspector_reuses_runs_per_method():
    model, variables, x = ae_setup()
    ins = fi.Inspector(model)
    for _ in range(3):
        ins.apply(variables, x, method="encode")
        fi.inspect(model, variables, x, mutable=["batch_stats"])
    assert ins._runs[("apply", "encode", False, False, None)].traces == 1


def test_variables_are_described_once_per_set_of_arrays(monkeypatch):
    import gc
    import weakref

    import numpy as np

    from inspector.inspection import variables as collect_variables

    memo = collect_variables.InputStats()
    monkeypatch.setattr(collect_variables, "input_stats", memo)
    model, variables, x = ae_setup()
    run = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"])
    first = run(variables, x)
    again = run(variables, x * 2)  # same variable arrays: their statistics are remembered
    assert memo.descriptions == 1
    kernel = first["params/dec/kernel"]
    assert again["params/dec/kernel"].stats == kernel.stats
    assert kernel.stats.mean == pytest.approx(float(np.asarray(kernel.value).mean()))
    # new arrays (even with equal values) are described anew, and the right ones
    shifted = jax.tree.map(lambda v: v + 1, variables)
    third = run(shifted, x)
    assert memo.descriptions == 2
    assert third["params/dec/kernel"].stats.mean == pytest.approx(kernel.stats.mean + 1)
    # remembering holds weak references only
    probe = weakref.ref(jax.tree.leaves(shifted)[0])
    del shifted, third
    gc.collect()
    assert probe() is None
    # numpy variables may change in place, so they are described every call
    host = jax.tree.map(np.asarray, variables)
    run(host, x)
    run(host, x)
    assert memo.descriptions == 4


def test_on_the_cpu_new_variables_are_described_beside_a_trace_or_after_a_cached_program(monkeypatch):
    """Beside tracing and compiling, describing overlaps Python work; beside a cached program on
    the CPU it would compete with XLA's own threads, so it waits until the program has run."""
    from inspector.inspection import variables as collect_variables

    memo = collect_variables.InputStats()
    order: list[str] = []
    soon = memo.soon
    monkeypatch.setattr(memo, "soon", lambda arrays: order.append("describe") or soon(arrays))
    monkeypatch.setattr(collect_variables, "input_stats", memo)
    model, variables, x = ae_setup()
    run = fi.inspect_apply(lambda m, x: m(x), model, mutable=["batch_stats"])
    run(jax.tree.map(lambda v: v + 1, variables), x, on_phase=order.append)  # computed arrays, as below
    assert order[:3] == ["describe", "tracing", "compiling"]  # as the trace starts
    for _ in range(2):  # the first call's program, then the one compiled after it
        run.settle()
        order.clear()
        shifted = jax.tree.map(lambda v: v + 1, variables)
        insp = run(shifted, x, on_phase=order.append)
        assert order == ["running", "describe", "done"] and jax.default_backend() == "cpu", order
    assert insp["params/dec/kernel"].stats.mean == pytest.approx(float(shifted["params"]["dec"]["kernel"].mean()))
