"""jax's leak check (``jax.check_tracer_leaks``) holds for inspected calls.

The check calls ``gc.collect()`` and reports any tracer still alive. ``gc.collect()`` does nothing
while another thread is collecting, so inspector keeps no tracer in a reference cycle of its own,
and runs nothing on other threads while the caller checks for leaks.
"""

import gc
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import inspector as fi
from inspector.inspection import pipeline, variables


class LearnScale(nn.Module):
    @nn.compact
    def __call__(self, x):
        return self.param("scale", nn.initializers.zeros, ()) * x


class VjpModel(nn.Module):
    """flax's own leak test (``test_vjp_tracer_leak``), plus a sow and batch statistics."""

    @nn.compact
    def __call__(self, x):
        y, bwd = nn.vjp(lambda mdl, x: mdl(x), LearnScale(), x)
        params_grad, x_grad = bwd(jnp.ones(y.shape))
        h = nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))
        self.sow("intermediates", "h", h)
        return y, params_grad, x_grad, h


def _inspector_cycles_holding_tracers(call) -> list[str]:
    """Names of the inspector-made objects that ``call`` left in reference cycles (garbage only a
    collection frees) from which a tracer can be reached."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        call()
        gc.garbage.clear()
        gc.collect()
        garbage = {id(o): o for o in gc.garbage}
        found = []
        for obj in gc.garbage:
            owner = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
            if not (getattr(owner, "__module__", None) or "").startswith("inspector"):
                continue
            seen, stack = {id(obj)}, [obj]
            while stack:
                refs = gc.get_referents(stack.pop())
                if any(isinstance(r, jax.core.Tracer) for r in refs):
                    found.append(owner.__qualname__)
                    break
                for r in refs:
                    if id(r) in garbage and id(r) not in seen:
                        seen.add(id(r))
                        stack.append(r)
        return found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.fixture
def vjp_model():
    model, x = VjpModel(), jnp.ones((2, 3))
    return model, model.init(jax.random.key(0), x), x


@pytest.mark.parametrize("quick", [True, False], ids=["first-call-describes-after", "summarizing-program"])
@pytest.mark.parametrize("keep", ["arrays", "stats"])
def test_inspector_keeps_no_tracer_in_a_reference_cycle(vjp_model, monkeypatch, quick, keep):
    model, variables, x = vjp_model
    monkeypatch.setattr(pipeline, "QUICK_FIRST_CALL", quick)
    calls = {
        "inspect_init": lambda: fi.inspect_init(VjpModel.__call__, model, keep=keep)(jax.random.key(0), x),
        "inspect_apply": lambda: fi.inspect_apply(VjpModel.__call__, model, mutable=["batch_stats"],
                                                  capture_intermediates=True, keep=keep)(variables, x),
        "apply": lambda: fi.apply(VjpModel.__call__, model, mutable=["batch_stats"],
                                  capture_intermediates=True)(variables, x),
    }
    for name, call in calls.items():
        assert _inspector_cycles_holding_tracers(call) == [], name


def _threads_seen(monkeypatch) -> list[str]:
    """Records the thread of every background step from now on: compiling ahead and describing
    variables (what earlier tests left on the threads is finished first)."""
    pipeline._compiler.submit(int).result()
    variables.wait_for_worker()
    seen: list[str] = []
    prepare, describe = pipeline._prepare_soon, variables.InputStats.__call__

    def recording_prepare(*a, **kw):
        seen.append(f"prepare on {threading.current_thread().name}")
        return prepare(*a, **kw)

    def recording_describe(self, arrays):
        seen.append(f"describe on {threading.current_thread().name}")
        return describe(self, arrays)

    monkeypatch.setattr(pipeline, "_prepare_soon", recording_prepare)
    monkeypatch.setattr(variables.InputStats, "__call__", recording_describe)
    return seen


def test_a_leak_checked_call_runs_nothing_beside_it(vjp_model, monkeypatch):
    model, variables, x = vjp_model
    seen = _threads_seen(monkeypatch)
    monkeypatch.setattr(pipeline, "QUICK_FIRST_CALL", True)
    run = fi.inspect_apply(VjpModel.__call__, model, mutable=["batch_stats"], capture_intermediates=True)
    with jax.check_tracer_leaks():
        first = run(variables, x)
        second = run(variables, x)
    main = threading.current_thread().name
    assert seen and set(seen) == {f"describe on {main}"}  # no compiling ahead, no worker
    assert run.traces == 1  # the summarizing program, from the first call on
    assert second.timings.cached
    for a, b in zip(jax.tree.leaves(first.state), jax.tree.leaves(second.state)):
        assert jnp.array_equal(a, b)


def test_a_leak_checked_call_waits_for_background_work_started_before(vjp_model, monkeypatch):
    model, variables, x = vjp_model
    seen = _threads_seen(monkeypatch)
    monkeypatch.setattr(pipeline, "QUICK_FIRST_CALL", True)
    monkeypatch.setattr(pipeline, "PREPARE_DELAY_S", 0.3)
    monkeypatch.setattr(pipeline, "COMPILE_AFTER_MS", 0.0)  # compiles ahead after the first call
    ended: list[float] = []
    prepare = pipeline._prepare_soon
    monkeypatch.setattr(pipeline, "_prepare_soon", lambda *a: (prepare(*a), ended.append(time.perf_counter())))
    unchecked = fi.inspect_apply(VjpModel.__call__, model, mutable=["batch_stats"], capture_intermediates=True)
    unchecked(variables, x)  # its summarizing program compiles on the compile thread, 0.3 s from now
    traced: list[float] = []
    checked = fi.inspect_init(VjpModel.__call__, model)
    with jax.check_tracer_leaks():
        checked(jax.random.key(0), x,
                on_phase=lambda p: traced.append(time.perf_counter()) if p == "tracing" else None)
    assert any(s.startswith("prepare on inspector-compile") for s in seen)
    assert ended and traced and ended[0] < traced[0]


def test_flax_vjp_leak_test_passes_inspected(vjp_model):
    model, variables, x = vjp_model
    with jax.check_tracer_leaks():
        state = fi.inspect_init(VjpModel.__call__, model)(jax.random.key(0), x).state
        fi.inspect_apply(VjpModel.__call__, model, mutable=["batch_stats"])(state, x)
