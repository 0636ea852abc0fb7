"""NNX modules (and linen modules wrapped by nnx.bridge) through the same Inspection model."""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import bridge

import inspector as fi


class Block(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 3, rngs=rngs)
        self.bn = nnx.BatchNorm(3, rngs=rngs)

    def __call__(self, x):
        h = self.bn(self.lin(x))
        self.sow(nnx.Intermediate, "act", h)
        return h


class Net(nnx.Module):
    def __init__(self, rngs):
        self.b1 = Block(rngs)
        self.out = nnx.Linear(3, 2, rngs=rngs)

    def encode(self, x):
        return self.b1(x)

    def __call__(self, x):
        return self.out(self.encode(x))


def test_nnx_module_inspection():
    model = Net(nnx.Rngs(0))
    x = jnp.linspace(-1, 1, 20).reshape(5, 4)
    before = np.asarray(model.b1.bn.mean.value)
    insp = fi.inspect_nnx(model, x)
    assert list(insp.variables.collections) == ["batch_stats", "params"]
    np.testing.assert_allclose(insp["params/b1/lin/kernel"].value, model.b1.lin.kernel.value)
    (diff,) = insp.diffs
    assert diff.name == "batch_stats" and {d.status for d in diff.leaves} == {"changed"}
    keys = {c.key: c for c in insp.calls}
    assert {"/:__call__[0]", "/:encode[0]", "b1:__call__[0]", "b1:act[0]", "b1/lin:__call__[0]",
            "b1/bn:__call__[0]", "out:__call__[0]"} == set(keys)
    assert keys["b1:act[0]"].sown and not keys["b1/lin:__call__[0]"].sown
    assert keys["b1/lin:__call__[0]"].module_type == "Linear"
    ref = Net(nnx.Rngs(0))
    np.testing.assert_allclose(insp.output, ref(x), rtol=1e-5, atol=1e-6)  # same as running nnx itself
    np.testing.assert_allclose(model.b1.bn.mean.value, before)  # the caller's module is untouched


def test_nnx_update_and_trace_cache():
    model = Net(nnx.Rngs(0))
    x = jnp.ones((5, 4)) * jnp.arange(4)
    run = fi.NnxInspectRun(model, update=True)
    insp = run(x)
    after = insp.state["batch_stats"]["b1"]["bn"]["mean"]
    np.testing.assert_allclose(model.b1.bn.mean.value, after)
    run(x)
    assert run.traces == 1
    enc = fi.inspect_nnx(model, x, method="encode")
    assert enc.output.shape == (5, 3) and "/:__call__[0]" not in {c.key for c in enc.calls}


def test_linen_module_wrapped_by_bridge():
    class L(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=False)(nn.Dense(3)(x))

    wrapped = bridge.ToNNX(L(), rngs=nnx.Rngs(0))
    x = jnp.arange(8.0).reshape(2, 4)
    bridge.lazy_init(wrapped, x)
    insp = fi.inspect_nnx(wrapped, x)
    assert [c.key for c in insp.calls] == ["Dense_0:__call__[0]", "BatchNorm_0:__call__[0]", "/:__call__[0]"]
    assert insp.diffs[0].name == "batch_stats"
    assert any("nnx.bridge.ToNNX" in n for n in insp.notes)
    np.testing.assert_allclose(insp["params/Dense_0/kernel"].value,
                               nnx.state(wrapped).to_pure_dict()["Dense_0"]["kernel"])


def test_an_uncached_nnx_call_counts_trace_and_compile_time_once():
    model, x = Net(nnx.Rngs(0)), jnp.ones((5, 4))
    run = fi.NnxInspectRun(model)
    marks, pause = {}, 0.2

    def mark(phase):
        marks.setdefault(phase, time.perf_counter())
        if phase == "compiling":
            time.sleep(pause)  # part of compile_ms; in run_ms too if it were measured from 'compiling'

    t0 = time.perf_counter()
    insp = run(x, on_phase=mark)
    wall_ms = (time.perf_counter() - t0) * 1000
    assert list(marks) == ["tracing", "compiling", "running", "done"]
    t = insp.timings
    # Orders of nested intervals of one clock: they hold however slow the machine is.
    assert not t.cached and t.trace_ms > 0 and t.compile_ms >= pause * 1000
    assert t.run_ms <= (marks["done"] - marks["compiling"] - pause) * 1000 + 1e-3  # measured from 'running' only
    assert t.total_ms <= wall_ms + 1e-3  # trace and compile are not in run_ms a second time
    marks.clear()
    again = run(x, on_phase=lambda phase: marks.setdefault(phase, time.perf_counter()))
    assert list(marks) == ["running", "done"]
    assert again.timings.cached and again.timings.trace_ms == again.timings.compile_ms == 0.0


def test_nnx_run_shows_a_widget_with_live_status(monkeypatch):
    from inspector.views.widgets import InspectionWidget

    model, x = Net(nnx.Rngs(0)), jnp.ones((5, 4))
    seen = []
    original = InspectionWidget.set_status
    monkeypatch.setattr(InspectionWidget, "set_status", lambda self, text: seen.append(text) or original(self, text))
    widget = fi.NnxInspectRun(model).show(x)
    assert seen[:4] == ["waiting", "tracing...", "compiling...", f"running on {jax.devices()[0]}..."]
    assert "done in" in widget.status.value and widget.inspection.module_type == "Net"
